"""Building the qemu board (scripts/boardvm.py): the Debian packages, Debian's stock kernel
and an initramfs of static busybox, mtd-utils, the kernel modules and this machine's own
Python (the project and its dependencies come over 9p, see boardvm.python_paths).

    setup(rig_dir)            one-time, idempotent: what changed is rebuilt
"""

import os
import re
import shutil
import stat
import struct
import subprocess
import sys
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
    "./lib/modules/*/kernel/drivers/block/virtio_blk.ko",
]

# zstd: UBIFS asks the crypto API for its compressors at mount time (lzo, deflate are built in)
# virtio_blk, block2mtd: flash on disk images that outlive the VM (boardvm_disks.py, the power-cut tests)
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "mtd", "mtdblock", "nandsim", "mtdram", "ubi", "zstd", "ubifs",
           "vfb", "virtio_blk", "block2mtd"]

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
        builtin = {os.path.basename(line.strip())[:-3].replace("-", "_") for line in bfile.read_text().splitlines()}
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


def _stage_modules(kroot, stage):
    """The modules, with a busybox-style modules.dep listing every module's full dependency chain."""
    kver = sorted(os.listdir(os.path.join(kroot, "lib/modules")))[-1]
    moddir = os.path.join(kroot, "lib/modules", kver)
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


def _stage_python(stage, python):
    """This machine's Python at the same absolute paths; the binaries whose libraries it needs."""
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
    bins = [exe] + ["/" + os.path.relpath(p, stage) for p in dyn]
    # the dependencies' C extensions (they come over 9p themselves, their system libraries do not)
    for d in python_paths():
        for sub in ("PIL", "pillow.libs", "bsdiff4"):
            for dp, _, fs in os.walk(os.path.join(d, sub)):
                bins += [os.path.join(dp, fn) for fn in fs if ".so" in fn]
    return bins


def build_initramfs(kroot, out, python=sys.executable):
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
    _stage_modules(kroot, stage)
    bins = []
    for b in MTD_UTILS:
        p = shutil.which(b, path="/usr/sbin:/sbin:/usr/bin")
        if p:
            _put(p, stage, "/usr/sbin/" + b)
            bins.append(p)
    bins += _stage_python(stage, python)
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


def _fetch_kernel(rig, log):
    """Debian's stock kernel and the parts of its modules the board loads, under rig/kroot."""
    log("board-vm: fetching Debian's stock kernel")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    p = subprocess.run(sudo + ["apt-get", "update", "-qq"], capture_output=True, text=True)
    if p.returncode != 0:  # an index of another architecture or suite failing is no reason to stop
        log("board-vm: apt-get update: %s (going on with the package lists there are)" % p.stderr.strip())
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
        _fetch_kernel(rig, log)
        kstamp.write_text(" ".join(KERNEL_PARTS))
        if (rig / "initramfs.stamp").exists():
            (rig / "initramfs.stamp").unlink()
    ident = "%s modules: %s" % (python_identity(python), " ".join(MODULES))
    stamp = rig / "initramfs.stamp"
    if not (rig / "initramfs.cpio").exists() or not stamp.exists() or stamp.read_text() != ident:
        log("board-vm: building the initramfs for %s" % ident.split()[0])
        build_initramfs(rig / "kroot", rig / "initramfs.cpio", python)
        stamp.write_text(ident)
    return rig


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

