"""The qemu board: a real Linux kernel with nandsim (NAND with factory bad blocks), mtdram
(NOR-like), mtdblock, UBI/UBIFS and vfb, booted under software emulation (never KVM),
with this machine's own Python and the project on 9p shares.

    setup(rig_dir)            one-time: Debian packages, the stock kernel, the initramfs
                              (scripts/boardvm_setup.py)
    BoardVM(rig_dir, work)    boot; .run("shell command") many times; .stop()

The guest runs an agent that takes command requests from the work share and answers
them there, so one boot serves a whole test session.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boardvm_setup import (  # noqa: E402,F401 (the rig's names, for the arm rig and the tests)
    DEFAULT_RIG, PROJECT, _run, module_order, python_paths, setup)

# ---------------------------------------------------------------------------- the VM


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def check(self):
        if self.rc != 0:
            raise AssertionError("board command failed (%d):\n%s\n%s" % (self.rc, self.out, self.err))
        return self


def wait_answer(work, name, alive, what, cmd, timeout):
    """The agent's answer to request name under work/resp, taken (its files removed): waits
    while alive() and at most timeout + 60 s."""
    rc_file = work / "resp" / (name + ".rc")
    deadline = time.monotonic() + timeout + 60
    while not rc_file.exists():
        if not alive():
            raise RuntimeError("the %s stopped while running %r; see %s" % (what, cmd, work))
        if time.monotonic() > deadline:
            raise RuntimeError("no answer from the %s for %r" % (what, cmd))
        time.sleep(0.02)
    rc = int(rc_file.read_text().strip() or 125)
    out = (work / "resp" / (name + ".out")).read_text(errors="replace")
    err = (work / "resp" / (name + ".err")).read_text(errors="replace")
    for ext in (".rc", ".out", ".err"):
        (work / "resp" / (name + ext)).unlink()
    return Result(rc, out, err)


AGENT = r'''
import json, os, subprocess, sys, time
W = "/mnt/work"
os.makedirs(W + "/resp", exist_ok=True)
open(W + "/ready", "w").close()
while True:
    names = sorted(n for n in os.listdir(W + "/req") if n.endswith(".json"))
    if not names:
        if os.path.exists(W + "/req/STOP"):
            break
        time.sleep(0.02)
        continue
    for name in names:
        path = os.path.join(W, "req", name)
        job = json.load(open(path))
        os.unlink(path)
        try:
            p = subprocess.run(job["cmd"], shell=True, capture_output=True, text=True, timeout=job["timeout"],
                               env=dict(os.environ, **job.get("env", {})), cwd=job.get("cwd") or "/")
            res = {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
        except subprocess.TimeoutExpired as exc:
            res = {"rc": 124, "out": exc.stdout or "", "err": (exc.stderr or "") + "\ntimeout"}
        tmp = os.path.join(W, "resp", name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(res, f)
        os.rename(tmp, os.path.join(W, "resp", name))
'''


class Guest:
    """What both boards share: a qemu process whose guest agent reads requests from work/req;
    STOP powers it off. Subclasses start() it and run() commands."""

    proc = None

    def stop(self):
        if self.proc is None:
            return
        (self.work / "req" / "STOP").write_text("")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Workspace:
    """A booted board plus a host folder that the guest sees as /mnt/work (tests, benches)."""

    def __init__(self, vm, work):
        self.vm = vm
        self.work = work

    def run(self, cmd, **kw):
        return self.vm.run(cmd, **kw)

    def sh(self, cmd, **kw):
        """Run and require success; returns stdout."""
        return self.vm.run(cmd, **kw).check().out

    def path(self, host_path):
        """The guest path of a file under the work folder."""
        return "/mnt/work/%s" % Path(host_path).relative_to(self.work)

    def fresh(self, name):
        """An empty folder under the work share, on the host."""
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d


def fresh_work(w, subs):
    """A guest's work folder before a boot: empty request/answer folders, no signal files of
    the boot before."""
    for sub in subs:
        shutil.rmtree(w / sub, ignore_errors=True)
        (w / sub).mkdir(parents=True)
    for f in ("ready", "guest-rc", "guest.log"):
        if (w / f).exists():
            (w / f).unlink()


def run_commands(vm, commands):
    """Run shell commands in the guest, passing their output on; the first failure's status."""
    rc = 0
    for c in commands:
        res = vm.run(c)
        sys.stdout.write(res.out)
        sys.stderr.write(res.err)
        rc = rc or res.rc
    return rc


class BoardVM(Guest):
    """One booted board; run() shell commands in it; stop() powers it off."""

    def __init__(self, rig=DEFAULT_RIG, work=None, mem=1536, boot_timeout=240, python=sys.executable):
        self.rig = Path(rig)
        self.work = Path(work)
        self.mem = mem
        self.boot_timeout = boot_timeout
        self.python = os.path.realpath(python)
        self.proc = None
        self.seq = 0

    def start(self):
        w = self.work
        shares = self._prepare_work()
        cmd = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", str(self.mem),
               "-no-reboot", "-nic", "none", "-display", "none", "-vga", "none", "-monitor", "none",
               "-serial", "file:%s" % (w / "console.log"),
               "-kernel", str(self.rig / "vmlinuz"), "-initrd", str(self.rig / "initramfs.cpio"),
               "-append", "console=ttyS0 quiet panic=-1 rdinit=/init board.shares=%s" % ",".join(shares)]
        for tag, path in shares.items():
            cmd += ["-virtfs", "local,path=%s,mount_tag=%s,security_model=none,id=%s%s"
                    % (path, tag, tag, "" if tag == "work" else ",readonly=on")]
        self.proc = subprocess.Popen(cmd + self.extra_args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(w / "qemu.log", "w"))
        deadline = time.monotonic() + self.boot_timeout
        while not (w / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the board did not come up; see %s and %s" % (w / "console.log", w / "guest.log"))
            time.sleep(0.05)
        return self

    def _prepare_work(self):
        """A clean request folder, the agent and its start script; the 9p shares (tag: host path)."""
        w = self.work
        fresh_work(w, ("req", "resp", "out"))
        (w / "agent.py").write_text(AGENT)
        shares = {"work": str(w), "proj": str(PROJECT)}
        pypath = ["/mnt/proj"]
        for i, d in enumerate(python_paths()):
            shares["py%d" % i] = d
            pypath.append("/mnt/py%d" % i)
        (w / "guest-run.sh").write_text(
            "#!/bin/sh\nexport PYTHONPATH=%s PYTHONDONTWRITEBYTECODE=1 HOME=/root\nexec %s -u /mnt/work/agent.py\n"
            % (":".join(pypath), self.python))
        os.chmod(w / "guest-run.sh", 0o755)
        return shares

    def extra_args(self):
        """More qemu arguments (devices); a subclass's."""
        return []

    def run(self, cmd, timeout=300, env=None, cwd=None):
        """Run a shell command in the guest; returns Result(rc, out, err)."""
        return self.answer(self.submit(cmd, timeout, env, cwd))

    def submit(self, cmd, timeout=300, env=None, cwd=None):
        """Start a shell command in the guest without waiting; answer(job) waits for it."""
        self.seq += 1
        name = "%06d.json" % self.seq
        tmp = self.work / "req" / (name + ".tmp")
        tmp.write_text(json.dumps({"cmd": cmd, "timeout": timeout, "env": env or {}, "cwd": cwd}))
        os.rename(tmp, self.work / "req" / name)
        return name, cmd, timeout

    def answered(self, job):
        """Whether the guest has answered a submitted command."""
        return (self.work / "resp" / job[0]).exists()

    def answer(self, job):
        """The Result of a submitted command, once the guest has run it."""
        name, cmd, timeout = job
        resp = self.work / "resp" / name
        deadline = time.monotonic() + timeout + 30
        while not resp.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("the board stopped while running %r; see %s" % (cmd, self.work / "guest.log"))
            if time.monotonic() > deadline:
                raise RuntimeError("no answer from the board for %r" % cmd)
            time.sleep(0.01)
        data = json.loads(resp.read_text())
        resp.unlink()
        return Result(data["rc"], data["out"], data["err"])


#: the board's flash, as the tests and the benchmark use it
NAND_PARTS = "8,8,8,8,8,192"  # mtd0-4: 1 MiB each; mtd5: 24 MiB; mtd6: the rest (99 MiB) for UBI
NAND_BAD_BLOCKS = "42,45"  # both inside mtd5 (PEBs 40..231): its erase blocks 2 and 5
NAND_WEAK_BLOCKS = "17:1"  # mtd2's erase block 1: its second erase fails (a block going bad)

BOARD_SETUP = """
set -e
modprobe nandsim id_bytes=0x2c,0xf1,0x80,0x95 parts={parts} badblocks={bad} weakblocks={weak}
modprobe mtdblock
modprobe mtdram total_size=8192 erase_size=64
modprobe ubi
modprobe zstd
modprobe ubifs
ubiattach -m 6 -O 2048 -d 0 >/dev/null
ubimkvol /dev/ubi0 -N rootfs -s 40MiB >/dev/null
ubimkvol /dev/ubi0 -N customer -s 8MiB -t static >/dev/null
mkdir -p /etc /config /customer /mnt/ubi
printf '#!/bin/sh\\necho "$@" >> /tmp/fw_setenv.log\\n' > /etc/fw_setenv
chmod 755 /etc/fw_setenv
cat /proc/mtd
""".format(parts=NAND_PARTS, bad=NAND_BAD_BLOCKS, weak=NAND_WEAK_BLOCKS)


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="board-vm", description="Set up and boot the qemu test board.")
    ap.add_argument("--rig", default=str(DEFAULT_RIG), help="where the kernel and initramfs live (%(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install qemu and mtd-utils, fetch the kernel, build the initramfs")
    r = sub.add_parser("run", help="boot, set up the flash, run shell commands, power off")
    r.add_argument("commands", nargs="+")
    r.add_argument("--work", default=None)
    a = ap.parse_args(argv)
    setup(a.rig)
    if a.cmd == "setup":
        print("board ready in %s" % a.rig)
        return 0
    import tempfile

    work = Path(a.work or tempfile.mkdtemp(prefix="board-"))
    with BoardVM(a.rig, work) as vm:
        print(vm.run(BOARD_SETUP).check().out, end="")
        return run_commands(vm, a.commands)


if __name__ == "__main__":
    sys.exit(main())
