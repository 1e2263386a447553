"""The qemu board: a real Linux kernel with nandsim (NAND with factory bad blocks), mtdram
(NOR-like), mtdblock, UBI/UBIFS and vfb, booted under software emulation (never KVM),
with this machine's own Python and the project on 9p shares.

    setup(rig_dir)            one-time: Debian packages, the stock kernel, the initramfs
    BoardVM(rig_dir, work)    boot; .run("shell command") many times; .stop()

The guest runs an agent that takes command requests from the work share and answers
them there, so one boot serves a whole test session.
"""

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_RIG = Path(os.environ.get("SSTAROTA_BOARD_DIR", Path.home() / ".cache" / "sstarota-board"))

DEBIAN_PACKAGES = ["qemu-system-x86", "busybox-static", "mtd-utils", "cpio"]

KERNEL_PARTS = [
    "./boot/vmlinuz-*", "./lib/modules/*/modules.builtin", "./lib/modules/*/modules.order",
    "./lib/modules/*/kernel/drivers/mtd", "./lib/modules/*/kernel/drivers/virtio",
    "./lib/modules/*/kernel/net/9p", "./lib/modules/*/kernel/fs/9p", "./lib/modules/*/kernel/fs/netfs",
    "./lib/modules/*/kernel/fs/fscache", "./lib/modules/*/kernel/fs/ubifs", "./lib/modules/*/kernel/lib",
    "./lib/modules/*/kernel/drivers/video/fbdev", "./lib/modules/*/kernel/crypto",
]

# zstd: UBIFS asks the crypto API for its compressors at mount time (lzo, deflate are built in)
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "mtd", "mtdblock", "nandsim", "mtdram", "ubi", "zstd", "ubifs",
           "vfb"]

MTD_UTILS = ["ubiattach", "ubidetach", "ubimkvol", "ubirmvol", "ubiupdatevol", "ubinfo", "ubiformat",
             "mtdinfo", "nandwrite", "nanddump", "flash_erase", "mtd_debug", "mkfs.ubifs"]

STDLIB_EXCLUDE = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                  "pydoc_data", "unittest/test", "distutils/tests", "ctypes/test", "sqlite3/test"}

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin /run /mnt
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
modprobe virtio_pci; modprobe 9pnet_virtio; modprobe 9p
for tag in $(sed -n 's/.*board\.shares=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' '); do
  mkdir -p /mnt/$tag
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 $tag /mnt/$tag
done
rc=125
if [ -x /mnt/work/guest-run.sh ]; then
  /mnt/work/guest-run.sh > /mnt/work/guest.log 2>&1; rc=$?
fi
echo $rc > /mnt/work/guest-rc
sync
poweroff -f
"""


# ---------------------------------------------------------------------------- setup


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def _modinfo_depends(path):
    """The 'depends=' of a kernel module (ELF32 or ELF64), from its .modinfo section."""
    data = Path(path).read_bytes()
    if data[4] == 1:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
        fmt = "<IIIIII"
    else:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        fmt = "<IIQQQQ"

    def section(i):
        name, _, _, _, offset, size = struct.unpack_from(fmt, data, shoff + i * shentsize)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if data[stroff + name:data.index(b"\0", stroff + name)] == b".modinfo":
            for item in data[offset:offset + size].split(b"\0"):
                if item.startswith(b"depends="):
                    return [d.replace("-", "_") for d in item[8:].decode().split(",") if d]
    return []


def module_order(moddir, wanted, required=True):
    """(name, path) of the wanted modules and their dependencies, dependencies first. A
    module that is not there is built into the kernel (modules.builtin, or any when not
    required); otherwise a missing one stops the set-up."""
    index = {}
    for dp, _, files in os.walk(moddir):
        for fn in files:
            if fn.endswith(".ko"):
                index[fn[:-3].replace("-", "_")] = os.path.join(dp, fn)
    builtin = set()
    bfile = Path(moddir) / "modules.builtin"
    if bfile.exists():
        builtin = {os.path.basename(l.strip())[:-3].replace("-", "_") for l in bfile.read_text().splitlines()}
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin or not required:
                return
            raise SystemExit("board-vm: kernel module %s not found" % name)
        for dep in _modinfo_depends(index[name]):
            visit(dep)
        order.append(name)

    for m in wanted:
        visit(m)
    return [(n, index[n]) for n in order]


def _ldd(paths):
    libs = set()
    for p in paths:
        out = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s*\(", line)
            if m:
                libs.add(m.group(1))
    return libs


def _put(src, stage, dst=None):
    target = Path(stage) / (dst or src).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy2(os.path.realpath(src), target)


def _copy_tree(src, dst, exclude):
    for dp, dirs, files in os.walk(src):
        rel = os.path.relpath(dp, src)
        rel = "" if rel == "." else rel
        dirs[:] = [d for d in dirs if os.path.join(rel, d) not in exclude]
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for fn in files:
            s = os.path.join(dp, fn)
            if ".opt-" in fn or fn.startswith("_tkinter") or (os.path.islink(s) and not os.path.exists(s)):
                continue
            shutil.copy2(s, os.path.join(dst, rel, fn))


def python_identity(python=sys.executable):
    exe = os.path.realpath(python)
    version = subprocess.run([exe, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    return "%s %s %s" % (exe, version.strip(), " ".join(python_paths()))


def build_initramfs(kroot, out, python=sys.executable):
    kver = sorted(os.listdir(os.path.join(kroot, "lib/modules")))[-1]
    moddir = os.path.join(kroot, "lib/modules", kver)
    stage = Path(str(out) + ".d")
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc", "proc", "sys", "dev", "tmp", "mnt",
              "root"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    for name, major, minor in (("console", 5, 1), ("null", 1, 3)):
        os.mknod(stage / "dev" / name, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    shutil.copy2("/bin/busybox", stage / "bin/busybox")
    (stage / "init").write_text(INIT)
    os.chmod(stage / "init", 0o755)
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    # modules, with a busybox-style modules.dep listing every module's full dependency chain
    mods = module_order(moddir, MODULES)
    paths = dict(mods)
    direct = {n: [d for d in _modinfo_depends(p) if d in paths] for n, p in mods}
    pos = {n: i for i, (n, _) in enumerate(mods)}

    def closure(n, acc):
        for d in direct[n]:
            if d not in acc:
                acc.add(d)
                closure(d, acc)
        return acc

    lines = []
    for name, path in mods:
        rel = os.path.relpath(path, moddir)
        dst = stage / "lib/modules" / kver / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst)
        deps = sorted(closure(name, set()), key=lambda d: -pos[d])
        lines.append(("%s: %s" % (rel, " ".join(os.path.relpath(paths[d], moddir) for d in deps))).rstrip())
    (stage / "lib/modules" / kver / "modules.dep").write_text("\n".join(lines) + "\n")
    for extra in ("modules.builtin", "modules.order"):
        if os.path.exists(os.path.join(moddir, extra)):
            shutil.copy2(os.path.join(moddir, extra), stage / "lib/modules" / kver / extra)
    bins = []
    for b in MTD_UTILS:
        p = shutil.which(b, path="/usr/sbin:/sbin:/usr/bin")
        if p:
            _put(p, stage, "/usr/sbin/" + b)
            bins.append(p)
    # this machine's Python, at the same absolute paths
    exe = os.path.realpath(python)
    info = subprocess.run([exe, "-c", "import sys, sysconfig; print(sysconfig.get_path('stdlib'));"
                                      "print(sysconfig.get_path('platstdlib')); print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.split()
    stdlib, platstdlib, ver = info
    _put(exe, stage)
    for n in ("python3", "python" + ver):
        link = stage / "usr/bin" / n
        if not os.path.lexists(link):
            os.symlink(exe, link)
    _copy_tree(stdlib, stage / stdlib.lstrip("/"), STDLIB_EXCLUDE | {"config-%s-x86_64-linux-gnu" % ver})
    if platstdlib != stdlib:
        _copy_tree(platstdlib, stage / platstdlib.lstrip("/"), STDLIB_EXCLUDE)
    (stage / stdlib.lstrip("/") / "site-packages").mkdir(parents=True, exist_ok=True)
    dyn = [os.path.join(dp, fn) for dp, _, fs in os.walk(stage / stdlib.lstrip("/")) for fn in fs if fn.endswith(".so")]
    bins += [exe] + ["/" + os.path.relpath(p, stage) for p in dyn]
    # the system libraries the dependencies' C extensions need (they come over 9p themselves)
    for d in python_paths():
        for sub in ("PIL", "pillow.libs", "bsdiff4"):
            for dp, _, fs in os.walk(os.path.join(d, sub)):
                bins += [os.path.join(dp, fn) for fn in fs if ".so" in fn]
    shared = tuple(python_paths())
    for lib in sorted(_ldd(bins)):
        if not lib.startswith(shared):
            _put(lib, stage)
    if not (stage / "lib64/ld-linux-x86-64.so.2").exists():
        _put("/lib64/ld-linux-x86-64.so.2", stage)
    with open(out, "wb") as f:
        find = subprocess.Popen(["find", "."], cwd=stage, stdout=subprocess.PIPE)
        _run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=stage, stdin=find.stdout, stdout=f)
        find.wait()
    shutil.rmtree(stage)


def setup(rig=DEFAULT_RIG, python=sys.executable, log=print):
    """Install the Debian packages, fetch the stock kernel, build the initramfs (idempotent)."""
    rig = Path(rig)
    rig.mkdir(parents=True, exist_ok=True)
    missing = [p for p, tool in zip(DEBIAN_PACKAGES, ("qemu-system-x86_64", "busybox", "ubiattach", "cpio"))
               if shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin") is None]
    if missing:
        log("board-vm: installing %s" % " ".join(missing))
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(sudo + ["apt-get", "update", "-qq"], env=env)
        _run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + DEBIAN_PACKAGES, env=env,
             stdout=subprocess.DEVNULL)
    kstamp = rig / "kernel.stamp"
    if not (rig / "vmlinuz").exists() or not kstamp.exists() or kstamp.read_text() != " ".join(KERNEL_PARTS):
        log("board-vm: fetching Debian's stock kernel")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        _run(sudo + ["apt-get", "update", "-qq"])
        deps = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True,
                              check=True).stdout
        kpkg = re.search(r"Depends: (linux-image-[0-9]\S*)", deps).group(1)
        kroot = rig / "kroot"
        shutil.rmtree(kroot, ignore_errors=True)
        kroot.mkdir()
        _run(["apt-get", "download", "-qq", kpkg], cwd=rig, stderr=subprocess.DEVNULL)
        deb = next(rig.glob(kpkg + "_*.deb"))
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        _run(["tar", "-x", "-C", str(kroot), "--wildcards"] + KERNEL_PARTS, stdin=tar.stdout)
        tar.wait()
        deb.unlink()
        shutil.copy(next((kroot / "boot").glob("vmlinuz-*")), rig / "vmlinuz")
        kstamp.write_text(" ".join(KERNEL_PARTS))
        if (rig / "initramfs.stamp").exists():
            (rig / "initramfs.stamp").unlink()
    ident = python_identity(python)
    stamp = rig / "initramfs.stamp"
    if not (rig / "initramfs.cpio").exists() or not stamp.exists() or stamp.read_text() != ident:
        log("board-vm: building the initramfs for %s" % ident.split()[0])
        build_initramfs(rig / "kroot", rig / "initramfs.cpio", python)
        stamp.write_text(ident)
    return rig


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


def python_paths():
    """The directories the project's dependencies live in, for the guest's PYTHONPATH."""
    import bsdiff4
    import click
    import construct

    dirs = []
    for mod in (construct, click, bsdiff4):
        d = str(Path(mod.__file__).resolve().parent.parent)
        if d not in dirs:
            dirs.append(d)
    try:
        import PIL

        d = str(Path(PIL.__file__).resolve().parent.parent)
        if d not in dirs:
            dirs.append(d)
    except ImportError:
        pass
    return dirs


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
        for sub in ("req", "resp", "out"):
            shutil.rmtree(w / sub, ignore_errors=True)
            (w / sub).mkdir(parents=True)
        for f in ("ready", "guest-rc", "guest.log"):
            if (w / f).exists():
                (w / f).unlink()
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
        cmd = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", str(self.mem),
               "-no-reboot", "-nic", "none", "-display", "none", "-vga", "none", "-monitor", "none",
               "-serial", "file:%s" % (w / "console.log"),
               "-kernel", str(self.rig / "vmlinuz"), "-initrd", str(self.rig / "initramfs.cpio"),
               "-append", "console=ttyS0 quiet panic=-1 rdinit=/init board.shares=%s" % ",".join(shares)]
        for tag, path in shares.items():
            cmd += ["-virtfs", "local,path=%s,mount_tag=%s,security_model=none,id=%s%s"
                    % (path, tag, tag, "" if tag == "work" else ",readonly=on")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(w / "qemu.log", "w"))
        deadline = time.monotonic() + self.boot_timeout
        while not (w / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the board did not come up; see %s and %s" % (w / "console.log", w / "guest.log"))
            time.sleep(0.05)
        return self

    def run(self, cmd, timeout=300, env=None, cwd=None):
        """Run a shell command in the guest; returns Result(rc, out, err)."""
        self.seq += 1
        name = "%06d.json" % self.seq
        tmp = self.work / "req" / (name + ".tmp")
        tmp.write_text(json.dumps({"cmd": cmd, "timeout": timeout, "env": env or {}, "cwd": cwd}))
        os.rename(tmp, self.work / "req" / name)
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
