"""The qemu board with flash that outlives it, for power cuts.

nandsim and mtdram keep their flash in the guest's RAM: it is gone with the VM. Here the
flash is raw image files on the host, attached as virtio disks and turned into MTD devices
in the guest by block2mtd (the x86 kernel has it; the armhf kernel does not). A power cut is
a SIGKILL of qemu: no shutdown, no unmount, no sync; the next start() boots the same images
as the cut left them.

    vm = DiskBoardVM(rig, work, {"raw": img1, "ubi": img2})  # /dev/vda, /dev/vdb (serials raw, ubi)
    vm.start(); vm.run(block2mtd_setup(["raw", "ubi"])).check()   # mtd0, mtd1
    job = vm.submit("...")          # something that creates work/cut when it is time
    vm.wait_file(work / "cut", job)
    vm.power_cut()
    vm.start()                      # the flash as it was at the cut

block2mtd writes into the guest's page cache of its disk, so a write it has completed is on
the disk only once that cache is written back; on real flash it is there when the write
returns. The guest side of a cut therefore freezes the writer (SIGSTOP) and fsyncs the
disks' block devices before the host kills qemu: the disk then holds what real flash would,
every completed MTD write and nothing later (tests/board/progress_cut.py does this).
"""

import time
from pathlib import Path

from boardvm import BoardVM

#: block2mtd's erase block (a NAND's usual 128 KiB)
ERASE_SIZE = 128 << 10


def flash_image(path, size):
    """An erased flash image: size bytes of 0xFF (block2mtd does not format anything)."""
    with open(path, "wb") as f:
        chunk = b"\xff" * (1 << 20)
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return Path(path)


def block2mtd_setup(serials, erase_size=ERASE_SIZE):
    """Guest commands: the virtio disks with these serials become MTD devices, in this order
    (mtd0, mtd1, ... when nothing else made MTD devices first). Prints /proc/mtd."""
    lines = ["set -e", "modprobe virtio_blk", "modprobe block2mtd"]
    for serial in serials:
        lines.append("dev=$(grep -lx %s /sys/block/vd*/serial | cut -d/ -f4)" % serial)
        lines.append("echo /dev/$dev,%d > /sys/module/block2mtd/parameters/block2mtd" % erase_size)
    lines.append("cat /proc/mtd")
    return "\n".join(lines) + "\n"


def disk_device(vm, serial):
    """The guest's block device (/dev/vdX) of the disk with this serial."""
    out = vm.run("grep -lx %s /sys/block/vd*/serial" % serial).check().out
    return "/dev/" + out.strip().split("/")[3]


class DiskBoardVM(BoardVM):
    """The board with virtio disks (raw image files, {serial: host path}) that survive it."""

    def __init__(self, rig, work, disks, **kw):
        super().__init__(rig, work, **kw)
        self.disks = {name: Path(path) for name, path in disks.items()}

    def extra_args(self):
        args = []
        for i, (serial, path) in enumerate(self.disks.items()):
            args += ["-drive", "file=%s,format=raw,if=none,id=disk%d,cache=writeback" % (path, i),
                     "-device", "virtio-blk-pci,drive=disk%d,serial=%s" % (i, serial)]
        return args

    def power_cut(self):
        """Stop the VM hard: qemu gets SIGKILL, the guest is told nothing."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def wait_file(self, path, job=None, timeout=300):
        """Wait until the guest creates path (on the work share). Fails when the submitted
        command job ends first (with its output) or the VM stops."""
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            if job is not None and self.answered(job):
                res = self.answer(job)
                raise AssertionError("the command ended before %s appeared (%d):\n%s\n%s"
                                     % (path, res.rc, res.out, res.err))
            if self.proc.poll() is not None:
                raise RuntimeError("the board stopped; see %s" % (self.work / "guest.log"))
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not appear in %d s" % (path, timeout))
            time.sleep(0.01)


def main():
    """A quick look: two fresh 4 MiB disks as mtd0 and mtd1, a byte written, a cut, twice."""
    import sys
    import tempfile

    from boardvm import setup

    rig = setup()
    work = Path(tempfile.mkdtemp(prefix="board-disks-"))
    disks = {n: flash_image(work / ("%s.img" % n), 4 << 20) for n in ("a", "b")}
    vm = DiskBoardVM(rig, work, disks)
    for _ in range(2):
        vm.start()
        sys.stdout.write(vm.run(block2mtd_setup(list(disks))).check().out)
        vm.run("printf x > /dev/mtd0").check()
        job = vm.submit("sync; touch /mnt/work/cut; sleep 100")
        vm.wait_file(work / "cut", job)
        vm.power_cut()
        (work / "cut").unlink()
    print("disk a begins with %r after two cuts" % disks["a"].read_bytes()[:4])


if __name__ == "__main__":
    main()
