"""The armhf qemu board: what SigmaStar boards are, a Cortex-A7 with 64 MB of RAM.

`qemu-system-arm -M virt -cpu cortex-a7 -m 64` under software emulation, Debian's armhf
kernel booted with `cma=0` (its 16 MiB CMA reserve would leave the installer 30 MB), an
initramfs of static busybox and kernel modules, and Debian's armhf Python 3.11 with
mtd-utils (and Pillow) on a read-only squashfs disk mounted at /usr, so Python's pages are
reclaimable like on flash, not pinned in RAM. Flash: nandsim (a 128 MiB NAND with a factory
bad block, its storage in a file on the ext4 data disk through `cache_file=`, not in RAM)
and UBI on it; a virtio disk stands for an eMMC/SD partition. The project comes from the
board bundle (sstarota.bundle) on the 9p work share, never from the host's site-packages.

    setup(rig)                 one-time: Debian armhf packages (cached), initramfs, /usr image
    ArmBoardVM(rig, work)      boot; .run("shell command") many times; .stop()

A busybox shell agent in the guest takes command files from the work share, so one boot
serves a whole session and costs no Python RAM while idle.
"""

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from boardvm import Guest, _run, fresh_work, module_order, run_commands, wait_answer  # noqa: E402

DEFAULT_RIG = Path(os.environ.get("SSTAROTA_BOARD_ARM_DIR", Path.home() / ".cache" / "sstarota-board-arm"))

HOST_PACKAGES = {"qemu-system-arm": "qemu-system-arm", "squashfs-tools": "mksquashfs", "e2fsprogs": "mkfs.ext4",
                 "cpio": "cpio"}

#: armhf packages: Python, the C libraries it and mtd-utils need, busybox, mtd-utils
ARMHF_PACKAGES = [
    "busybox-static", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g",
    "libexpat1", "libbz2-1.0", "libgcc-s1", "mtd-utils", "libiniparser1", "liblzo2-2", "libselinux1", "libssl3",
    "libuuid1", "libzstd1", "libpcre2-8-0",
]
#: Debian's Pillow and the libraries its extension links (the framebuffer screen, optional)
PILLOW_PACKAGES = [
    "python3-pil", "libfreetype6", "libimagequant0", "libjpeg62-turbo", "liblcms2-2", "libopenjp2-7", "libraqm0",
    "libtiff6", "libwebp7", "libwebpdemux2", "libwebpmux3", "libxcb1", "libpng16-16", "libbrotli1", "libdeflate0",
    "libjbig0", "liblerc4", "liblzma5", "libxau6", "libxdmcp6", "libbsd0", "libmd0", "libfribidi0", "libharfbuzz0b",
    "libglib2.0-0", "libgraphite2-3", "libstdc++6", "libffi8", "libmount1", "libblkid1", "libgomp1",
]

#: loaded by /init; nandsim later, by the flash set-up (its cache file lives on the data disk)
MODULES = ["virtio_mmio", "virtio_blk", "9pnet_virtio", "9p", "squashfs", "crc32c_generic", "ext4", "nandsim",
           "mtdblock", "ubi"]

#: the parts of the stdlib a board never needs
STDLIB_EXCLUDE = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "venv",
                  "unittest/test", "distutils/tests", "ctypes/test", "sqlite3/test", "config-3.11-arm-linux-gnueabihf"}

#: the NAND: 128 MiB (1024 x 128 KiB erase blocks, 2 KiB pages); mtd0 17 MiB with the factory bad
#: block 5, mtd1 65 MiB, mtd2 the remaining 46 MiB for UBI (one 8 MiB volume, the rest free)
NAND_PARTS = "136,520"
NAND_BAD_BLOCKS = "5"
FLASH_SETUP = """
set -e
insmod /modules/nandsim.ko id_bytes=0x2c,0xf1,0x80,0x95 parts={parts} badblocks={bad} cache_file=/data/nand.cache
ubiattach -m 2 -d 0 >/dev/null
ubimkvol /dev/ubi0 -N data -s 8MiB >/dev/null
mkdir -p /data/tmp /data/root
cat /proc/mtd
""".format(parts=NAND_PARTS, bad=NAND_BAD_BLOCKS)

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr /data /mnt/work /sbin /run
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777,size=8m tmpfs /tmp
for m in $(cat /modules/order); do
  case $m in nandsim.ko) ;; *) insmod /modules/$m 2>/dev/null || echo "init: insmod $m failed";; esac
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /mnt/work
for b in /sys/block/vd*; do
  d=/dev/${b##*/}
  case $(cat $b/serial 2>/dev/null) in
    usr) mount -t squashfs -o ro $d /usr;;
    data) mount -t ext4 $d /data;;
    blk) ln -s $d /dev/emmc;;
  esac
done
echo "init: up in $(cut -d' ' -f1 /proc/uptime)s; $(grep MemTotal /proc/meminfo)"
rc=125
if [ -x /mnt/work/guest-run.sh ]; then
  /mnt/work/guest-run.sh > /mnt/work/guest.log 2>&1; rc=$?
fi
echo $rc > /mnt/work/guest-rc
umount /data
sync
poweroff -f
"""

#: the guest's agent: runs req/N.sh, answers resp/N.out, N.err, then N.rc (renamed into place last)
AGENT = r"""#!/bin/sh
cd /
W=/mnt/work
export HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin TMPDIR=/data/tmp
mkdir -p $W/resp /root
touch $W/ready
while :; do
  set -- $W/req/*.sh
  if [ ! -e "$1" ]; then
    [ -e $W/req/STOP ] && break
    sleep 0.05
    continue
  fi
  for f; do
    n=${f##*/}; n=${n%.sh}
    t=$(sed -n '1s/^# timeout //p' $f)
    timeout -s KILL ${t:-600} sh $f > $W/resp/$n.out 2> $W/resp/$n.err < /dev/null
    echo $? > $W/resp/$n.rc.tmp
    rm -f $f
    mv $W/resp/$n.rc.tmp $W/resp/$n.rc
  done
done
"""


# ---------------------------------------------------------------------------- setup


def _sudo():
    return [] if os.geteuid() == 0 else ["sudo"]


def _apt(args, log, **kw):
    """apt-get, waiting for another job's dpkg/apt lock rather than touching it."""
    for _ in range(60):
        p = subprocess.run(_sudo() + ["apt-get"] + args, capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), **kw)
        if p.returncode == 0 or not re.search(r"Could not get lock|Unable to acquire|another process", p.stderr):
            return p
        log("board-vm-arm: apt is busy, waiting")
        time.sleep(10)
    return p


def _extract(deb, dest):
    _run(["dpkg-deb", "-x", str(deb), str(dest)])


def _merge_usr(root):
    """Debian's merged /usr: /lib, /bin, /sbin of the packages move under /usr (the board's /lib
    is a link to usr/lib, and /usr is the squashfs)."""
    for d in ("lib", "bin", "sbin"):
        src = root / d
        if src.is_dir() and not src.is_symlink():
            for dp, _, files in os.walk(src):
                rel = os.path.relpath(dp, src)
                for fn in files + [x for x in os.listdir(dp) if os.path.islink(os.path.join(dp, x))
                                   and os.path.isdir(os.path.join(dp, x))]:
                    s = os.path.join(dp, fn)
                    t = root / "usr" / d / rel / fn
                    t.parent.mkdir(parents=True, exist_ok=True)
                    if not os.path.lexists(t):
                        os.rename(s, t)
            shutil.rmtree(src)


def host_python311():
    """A Python 3.11 on the host to compile the board's bytecode (the .pyc magic is per minor)."""
    for cand in (sys.executable, "/usr/bin/python3.11", shutil.which("python3.11") or ""):
        if cand and os.path.exists(cand):
            out = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                 capture_output=True, text=True).stdout.strip()
            if out == "True":
                return cand
    raise SystemExit("board-vm-arm: needs a Python 3.11 on the host to compile the board's stdlib")


def build_usr(rig, debs, out, python311):
    """The board's /usr as a squashfs: Debian's armhf Python (stdlib compiled to .pyc),
    the C libraries, mtd-utils, Pillow."""
    stage = rig / "usr.d"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    for deb in debs:
        if not deb.name.startswith(("busybox", "linux-image")):
            _extract(deb, stage)
    _merge_usr(stage)
    usr = stage / "usr"
    for junk in ("share/doc", "share/man", "share/locale", "share/lintian", "share/bug", "share/info"):
        shutil.rmtree(usr / junk, ignore_errors=True)
    lib = usr / "lib/python3.11"
    for ex in STDLIB_EXCLUDE:
        shutil.rmtree(lib / ex, ignore_errors=True)
    if (lib / "sitecustomize.py").exists():  # Debian's apport hook
        (lib / "sitecustomize.py").unlink()
    os.symlink("python3.11", usr / "bin/python3")
    os.symlink("/bin/busybox", usr / "bin/env")  # for the bundle's #!/usr/bin/env python3
    _run([python311, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
          str(lib), str(usr / "lib/python3/dist-packages")], stdout=subprocess.DEVNULL)
    tmp = Path(str(out) + ".tmp")
    _run(["mksquashfs", str(usr), str(tmp), "-comp", "xz", "-noappend", "-all-root", "-quiet", "-no-progress"],
         stdout=subprocess.DEVNULL)
    os.replace(tmp, out)
    shutil.rmtree(stage)


def build_initramfs(rig, debs, out, init=INIT, modules=MODULES, merged=True, kroot=None):
    """The initramfs: static busybox, the kernel modules, /init. merged: /lib is a link to
    usr/lib (Debian's layout); else /lib is a directory of its own (Buildroot's, a vendor's)."""
    stage = rig / "initramfs.d"
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "usr", "etc", "root", "modules", "data", "mnt/work"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    if merged:
        os.symlink("usr/lib", stage / "lib")
    else:
        (stage / "lib").mkdir()
    bb = rig / "bb.d"
    shutil.rmtree(bb, ignore_errors=True)
    _extract(next(d for d in debs if d.name.startswith("busybox-static_")), bb)
    shutil.copy2(bb / "bin/busybox", stage / "bin/busybox")
    shutil.rmtree(bb)
    kroot = kroot or rig / "kroot"
    moddir = next((kroot / "lib/modules").iterdir())
    names = []
    for _, path in module_order(moddir, modules, required=False):
        shutil.copy2(path, stage / "modules")
        names.append(os.path.basename(path))
    (stage / "modules/order").write_text("\n".join(names) + "\n")
    (stage / "init").write_text(init)
    os.chmod(stage / "init", 0o755)
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    for name, major, minor in (("console", 5, 1), ("null", 1, 3)):
        os.mknod(stage / "dev" / name, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    with open(out, "wb") as f:
        find = subprocess.Popen(["find", "."], cwd=stage, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=stage, stdin=find.stdout,
                                stdout=subprocess.PIPE)
        _run(["gzip", "-6"], stdin=cpio.stdout, stdout=f)
        find.wait()
        cpio.wait()
    shutil.rmtree(stage)


def setup(rig=DEFAULT_RIG, log=print, pillow=True):
    """Host tools, the armhf packages (downloaded once, kept in RIG/debs), the kernel, the
    initramfs and the /usr image (rebuilt only when the package set changes). Idempotent."""
    rig = Path(rig)
    rig.mkdir(parents=True, exist_ok=True)
    missing = [p for p, tool in HOST_PACKAGES.items()
               if shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin") is None]
    if missing:
        log("board-vm-arm: installing %s" % " ".join(missing))
        _apt(["update", "-qq"], log)
        p = _apt(["install", "-y", "-qq", "--no-install-recommends"] + missing, log)
        if p.returncode:
            raise SystemExit("board-vm-arm: apt-get install %s failed:\n%s" % (" ".join(missing), p.stderr))
    wanted = ARMHF_PACKAGES + (PILLOW_PACKAGES if pillow else [])
    debdir = rig / "debs"
    stamp = rig / "debs.stamp"
    if not stamp.exists() or stamp.read_text() != " ".join(wanted):
        log("board-vm-arm: fetching Debian's armhf packages")
        arches = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout
        if "armhf" not in arches.split():
            _run(_sudo() + ["dpkg", "--add-architecture", "armhf"])
        deps = subprocess.run(["apt-cache", "depends", "linux-image-armmp:armhf"], capture_output=True, text=True)
        if "Depends:" not in deps.stdout:
            _apt(["update", "-qq"], log)  # a mirror's armhf security index may fail: main is enough
            deps = subprocess.run(["apt-cache", "depends", "linux-image-armmp:armhf"], capture_output=True,
                                  text=True)
        kpkg = re.search(r"Depends: (linux-image-[0-9]\S*?)(:armhf)?\s", deps.stdout).group(1)
        shutil.rmtree(debdir, ignore_errors=True)
        debdir.mkdir()
        p = _apt(["download", "-qq"] + ["%s:armhf" % n for n in [kpkg] + wanted], log, cwd=debdir)
        if p.returncode:
            raise SystemExit("board-vm-arm: apt-get download failed:\n%s" % p.stderr)
        kroot = rig / "kroot"
        shutil.rmtree(kroot, ignore_errors=True)
        _extract(next(debdir.glob("linux-image-*.deb")), kroot)
        shutil.copy(next((kroot / "boot").glob("vmlinuz-*")), rig / "vmlinuz")
        for sub in ("boot", "usr"):
            shutil.rmtree(kroot / sub, ignore_errors=True)
        for f in ("initramfs.cpio.gz", "usr.sqfs"):
            if (rig / f).exists():
                (rig / f).unlink()
        stamp.write_text(" ".join(wanted))
    debs = sorted(debdir.glob("*.deb"))
    if not (rig / "initramfs.cpio.gz").exists():
        log("board-vm-arm: building the initramfs")
        build_initramfs(rig, debs, rig / "initramfs.cpio.gz")
    if not (rig / "usr.sqfs").exists():
        log("board-vm-arm: building the /usr image (Debian's armhf Python)")
        build_usr(rig, debs, rig / "usr.sqfs", host_python311())
    return rig


# ---------------------------------------------------------------------------- the runtime rig

#: the board for the runtime alone: no Debian Python, /lib a directory of its own (not merged
#: /usr); its /usr is the runtime's squashfs and its /lib gets the tarball's loader. A new
#: directory name, so the armhf rig above stays as it is for the tests that use it.
RUNTIME_RIG = Path(os.environ.get("SSTAROTA_BOARD_ARM_RT_DIR", DEFAULT_RIG.parent / "sstarota-board-arm-rt1"))

#: its modules: no nandsim or UBI (the runtime's board tests write an eMMC-like disk and
#: files); a network to the host (URL installs) and a virtio-gpu framebuffer (/dev/fb0)
RUNTIME_MODULES = ["virtio_mmio", "virtio_blk", "9pnet_virtio", "9p", "squashfs", "crc32c_generic", "ext4",
                   "virtio_net", "virtio_gpu"]

#: the guest's address of the host on qemu's user network (the host's 127.0.0.1)
HOST = "10.0.2.2"

#: the runtime as a board integrator installs it: the tarball's part outside /usr (the
#: loader, /lib/ld-linux-armhf.so.3) unpacked at /, its usr/ as the squashfs mounted at /usr
RUNTIME_SETUP = r"""rm -rf /modules  # loaded: their files would hold 3 MB of the 64 in the initramfs
for v in /sys/class/vtconsole/vtcon*/bind; do echo 0 > $v; done 2>/dev/null  # /dev/fb0 is ours, not fbcon's
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up 2>/dev/null && route add default gw 10.0.2.2
if [ -f /mnt/work/runtime/python-armhf.tar.gz ]; then
  t=/mnt/work/runtime/python-armhf.tar.gz
  tar -xzf $t -C / $(tar -tzf $t | grep -v '^./usr/')
fi
"""
RUNTIME_INIT = INIT.replace('echo "init: up in', RUNTIME_SETUP + 'echo "init: up in')


def setup_runtime(rig=RUNTIME_RIG, log=print):
    """The runtime rig: the armhf rig's kernel and busybox (that rig is set up first), an
    initramfs with a root of the other kind. Idempotent."""
    base = setup(log=log)
    rig = Path(rig)
    rig.mkdir(parents=True, exist_ok=True)
    stamp = rig / "initramfs.stamp"
    want = " ".join(RUNTIME_MODULES) + "\n" + RUNTIME_INIT
    if not stamp.exists() or stamp.read_text() != want or not (rig / "initramfs.cpio.gz").exists():
        log("board-vm-arm: building the runtime board's initramfs (no merged /usr, no Python)")
        build_initramfs(rig, sorted((base / "debs").glob("*.deb")), rig / "initramfs.cpio.gz", init=RUNTIME_INIT,
                        modules=RUNTIME_MODULES, merged=False, kroot=base / "kroot")
        shutil.copy(base / "vmlinuz", rig / "vmlinuz")
        stamp.write_text(want)
    return rig


# ---------------------------------------------------------------------------- the VM


def screen_mem(screen):
    """MiB of guest RAM a virtio-gpu display of (xres, yres) at 32 bpp takes: two copies."""
    return (2 * screen[0] * screen[1] * 4 + (1 << 20) - 1) >> 20


class ArmBoardVM(Guest):
    """One booted armhf board; run() shell commands in it; stop() powers it off."""

    def __init__(self, rig=DEFAULT_RIG, work=None, mem=64, boot_timeout=300, data_size=512 << 20,
                 blk_size=8 << 20, usr_image=None, net=False, screen=None):
        """net: qemu's user network (the host is HOST); screen: (xres, yres) of a virtio-gpu
        display, the guest's /dev/fb0. Its framebuffer is given on top of `mem` (screen_mem):
        a SigmaStar board's is a region reserved outside Linux's memory, while virtio-gpu takes
        it, twice (the GEM object and fbdev's shadow copy), from the guest's RAM."""
        self.net = net
        self.screen = screen
        mem += screen_mem(screen) if screen else 0
        self.rig = Path(rig)
        self.usr_image = Path(usr_image) if usr_image else self.rig / "usr.sqfs"
        self.work = Path(work)
        self.mem = mem
        self.boot_timeout = boot_timeout
        self.data_size = data_size
        self.blk_size = blk_size
        self.proc = None
        self.seq = 0
        self.boot_seconds = None

    def start(self):
        w = self.work
        fresh_work(w, ("req", "resp"))
        (w / "guest-run.sh").write_text(AGENT)
        os.chmod(w / "guest-run.sh", 0o755)
        disks = w.parent / (w.name + "-disks")
        disks.mkdir(exist_ok=True)
        data, blk = disks / "data.img", disks / "blk.img"
        for img, size in ((data, self.data_size), (blk, self.blk_size)):
            if img.exists():
                img.unlink()
            with open(img, "wb") as f:
                f.truncate(size)
        _run(["mkfs.ext4", "-q", "-F", "-L", "data", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(data)])
        self.disks = disks
        cmd = ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a7", "-smp", "1", "-m", str(self.mem),
               "-accel", "tcg", "-no-reboot", "-nic", "none", "-display", "none", "-monitor", "none",
               "-serial", "file:%s" % (w / "console.log"),
               "-kernel", str(self.rig / "vmlinuz"), "-initrd", str(self.rig / "initramfs.cpio.gz"),
               "-append", "console=ttyAMA0 panic=-1 rdinit=/init quiet loglevel=4 cma=0"]
        for serial, path, ro in (("usr", self.usr_image, True), ("data", data, False), ("blk", blk, False)):
            cmd += ["-drive", "if=none,id=%s,file=%s,format=raw%s" % (serial, path, ",readonly=on" if ro else ""),
                    "-device", "virtio-blk-device,drive=%s,serial=%s" % (serial, serial)]
        if self.net:
            i = cmd.index("-nic")
            del cmd[i:i + 2]
            cmd += ["-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0"]
        if self.screen:  # virtio-gpu needs virtio 1.0: modern virtio-mmio (qemu's virt is legacy by default)
            cmd += ["-global", "virtio-mmio.force-legacy=false",
                    "-device", "virtio-gpu-device,xres=%d,yres=%d" % tuple(self.screen)]
        cmd += ["-fsdev", "local,id=work,path=%s,security_model=none" % w,
                "-device", "virtio-9p-device,fsdev=work,mount_tag=work"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(w / "qemu.log", "w"))
        deadline = t0 + self.boot_timeout
        while not (w / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the armhf board did not come up; see %s" % (w / "console.log"))
            time.sleep(0.1)
        self.boot_seconds = time.monotonic() - t0
        return self

    def run(self, cmd, timeout=600, env=None, cwd=None):
        """Run a shell command in the guest; returns Result(rc, out, err)."""
        self.seq += 1
        name = "%06d" % self.seq
        lines = ["# timeout %d" % timeout]
        for k, v in (env or {}).items():
            lines.append("export %s='%s'" % (k, str(v).replace("'", "'\\''")))
        if cwd:
            lines.append("cd '%s' || exit 125" % cwd)
        lines.append(cmd)
        tmp = self.work / "req" / (name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.rename(tmp, self.work / "req" / (name + ".sh"))
        return wait_answer(self.work, name, lambda: self.proc.poll() is None, "armhf board", cmd, timeout)

    def stop(self):
        super().stop()
        shutil.rmtree(getattr(self, "disks", self.work / "nonexistent"), ignore_errors=True)


# ---------------------------------------------------------------------------- footprint


def footprint(log=print, screen=(1280, 720)):
    """The board bundle's footprint budget (scripts/bench board-footprint): the zipapp, the
    runtime with and without the screen (tarball, squashfs, unpacked), and on the runtime
    board (64 MB, nothing but the runtime) the peak RSS of a 16 MiB install with the screen
    at `screen` and without it. Returns {figure: value}."""
    import tempfile

    sys.path.insert(0, str(HERE.parent))
    from PIL import Image

    from sstarota import bundle, runtime

    rig = setup_runtime(log=log)
    cache = os.path.join(os.path.expanduser("~"), ".cache", "sstarota-runtime")
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        w = d / "work"
        (w / "bundle").mkdir(parents=True)
        got["zipapp"] = bundle.zipapp(str(w / "bundle/otaunpack"), interpreter="/usr/bin/python3")
        got["zipapp --sourceless"] = bundle.zipapp(str(d / "sourceless"), sources=False)
        for name, with_screen in (("runtime", True), ("runtime --no-screen", False)):
            out = d / name.replace(" ", "")
            tree = runtime.build("armhf", str(out), cache, log=lambda m: None, screen=with_screen)
            got[name + " unpacked"] = runtime.unpacked_size(tree)
            got[name + " .tar.gz"] = os.path.getsize(out / "python-armhf.tar.gz")
            got[name + " .sqfs"] = os.path.getsize(out / "python-armhf.sqfs")
            shutil.rmtree(tree)
        (w / "runtime").mkdir()
        shutil.copy(d / "runtime/python-armhf.tar.gz", w / "runtime")
        image = os.urandom(16 << 20)
        (d / "img").write_bytes(image)
        Image.new("RGB", screen, (30, 60, 120)).save(w / "pic.jpg", quality=85)
        pkg = w / "p.bin"
        for args in (["-c", str(pkg), "--manifest"], ["-a", str(pkg), "-s", str(d / "img"), "-d", "/dev/emmc",
                                                       "--block-update"], ["--gzip", str(pkg)]):
            _run([sys.executable, "-m", "sstarota.cli.otapack"] + args, stdout=subprocess.DEVNULL)
        with ArmBoardVM(rig, w, usr_image=d / "runtime/python-armhf.sqfs", screen=screen, blk_size=32 << 20) as vm:
            vm.run("mkdir -p /data/tmp").check()

            def peak(cmd):
                # busybox 1.35's time -f %M is 4x the kernel's ru_maxrss (kB): undone here
                r = vm.run("time -f 'maxrss %%M' %s" % cmd, timeout=1800)
                m = re.findall(r"^maxrss (\d+)$", r.err, re.M)
                if r.rc != 0 or not m:
                    raise SystemExit("board-footprint: %s failed (%d):\n%s" % (cmd, r.rc, r.err[-2000:]))
                return int(m[-1]) // 4 * 1024

            got["peak RSS, python3 -c pass"] = peak("python3 -c pass")
            run = "/mnt/work/bundle/otaunpack -x /mnt/work/p.bin.gz -t /data/tmp -q"
            got["peak RSS, 16 MiB install, no screen"] = peak(run)
            got["peak RSS, 16 MiB install, screen %dx%d" % screen] = peak(run + " -p /mnt/work/pic.jpg")
    return got


def main(argv=None):
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="board-vm-arm", description="Set up and boot the armhf qemu board.")
    ap.add_argument("--rig", default=str(DEFAULT_RIG), help="where the kernel, initramfs and /usr image live")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install qemu-system-arm, fetch the armhf packages, build the images")
    r = sub.add_parser("run", help="boot, set up the flash, run shell commands, power off")
    r.add_argument("commands", nargs="+")
    r.add_argument("--mem", type=int, default=64)
    a = ap.parse_args(argv)
    setup(a.rig)
    if a.cmd == "setup":
        print("armhf board ready in %s" % a.rig)
        return 0
    work = Path(tempfile.mkdtemp(prefix="board-arm-"))
    with ArmBoardVM(a.rig, work, mem=a.mem) as vm:
        print("booted in %.1f s" % vm.boot_seconds)
        print(vm.run(FLASH_SETUP).check().out, end="")
        return run_commands(vm, a.commands)


if __name__ == "__main__":
    sys.exit(main())
