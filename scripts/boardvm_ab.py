"""The A/B board: the armhf board (scripts/boardvm_arm.py) booted through a real u-boot, with
SigmaStar's A/B env protocol (slot_select, slot_number, slot_metadata, bootcmd_a/_b,
bootcmd=bootab) on emulated NOR flash with two env copies.

    setup(rig)              one-time, cached in RIG (~/.cache/sstarota-board-ab):
                            qemu 10 (bookworm-backports, private apt state, unpacked here),
                            u-boot for qemu_arm built from Debian's u-boot source with a redundant
                            environment and the `bootab` command (scripts/boardab/bootab.c),
                            the CFI/physmap/cmdlinepart modules the armmp kernel lacks (built
                            from Debian's linux-source), libubootenv's fw_printenv/fw_setenv,
                            the slot images (FIT: kernel + initramfs) and the factory flash
    ABBoardVM(rig, work)    power on (start), run() shell commands through the 9p agent,
                            reboot(), power_cut(); every boot's bootab lines from the console

The flash (second pflash bank, CPU 0x04000000, 64 MiB, 256 KiB erase blocks), as Linux sees it
(mtdparts from u-boot; mtd0 is bank 0, u-boot itself):

    mtd1 ENV 256k, mtd2 ENV1 256k (the env and its redundant copy), mtd3 MISC 512k,
    mtd4 KERNEL 16m (slot A), mtd5 KERNEL_BACKUP 16m (slot B), mtd6 DATA

as SigmaStar's nor.squashfs.ab / *.dualenv partition configs lay them out
(`kernel_otablk = /dev/mtd4 /dev/mtd5`, `ENV`/`ENV1`). Pitfalls (docs/AB.md and the reference
recipe): bookworm's qemu 7.2 cannot saveenv (qemu issue 2343), the armmp kernel has no CFI
flash driver, `bootm` of a FIT needs `#conf-1`, a zImage at -m 64 lands on the initramfs
(the FIT carries the gzipped Image), `fw_setenv -s` wants name=value lines.
"""

import fcntl
import gzip
import json
import lzma
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import boardvm_arm  # noqa: E402
from boardvm import Guest, _run, fresh_work, module_order, wait_answer  # noqa: E402

DEFAULT_RIG = Path(os.environ.get("SSTAROTA_BOARD_AB_DIR", Path.home() / ".cache" / "sstarota-board-ab"))

HOST_PACKAGES = {"gcc-arm-linux-gnueabihf": "arm-linux-gnueabihf-gcc", "bison": "bison", "flex": "flex",
                 "make": "make", "bc": "bc", "u-boot-tools": "mkenvimage", "device-tree-compiler": "dtc",
                 "dpkg-dev": "dpkg-source", "libssl-dev": "/usr/include/openssl/ssl.h",
                 "libgnutls28-dev": "/usr/include/gnutls/gnutls.h", "xz-utils": "xz", "e2fsprogs": "mkfs.ext4"}
ARMHF = ["linux-headers-{kver}:armhf", "linux-headers-{kabi}-common", "linux-kbuild-{kser}",
         "linux-source-{kser}={kdeb}", "libubootenv0.1:armhf", "libubootenv-tool:armhf"]
UBOOT_CONFIG = """
CONFIG_SYS_REDUNDAND_ENVIRONMENT=y
CONFIG_ENV_ADDR_REDUND=0x4040000
CONFIG_BOOTDELAY=0
"""

# ---- the flash (second pflash bank) and RAM at -m 64
BANK1 = 0x04000000
BANK_SIZE = 64 << 20
ENV_SIZE = 0x40000
ENV_OFF = (0x0, 0x40000)  # ENV, ENV1: CONFIG_ENV_ADDR, CONFIG_ENV_ADDR_REDUND (bank-relative)
SLOT_SIZE = 16 << 20
SLOT_OFF = {"A": 0x100000, "B": 0x1100000}
MTDPARTS = "0.flash:64m(BOOT)ro,256k(ENV),256k(ENV1),512k(MISC),16m(KERNEL),16m(KERNEL_BACKUP),-(DATA)"
SLOT_MTD = {"A": "/dev/mtd4", "B": "/dev/mtd5"}
RAM = 0x40000000
UBOOT_LMB_FLOOR = 0x41df0000  # u-boot keeps 16 MiB below its stack at -m 64
TRIES = 3

MODULES = ["virtio_mmio", "virtio_blk", "9pnet_virtio", "9p", "squashfs", "crc32c_generic", "ext4",
           "cfi_util", "cfi_cmdset_0001", "gen_probe", "cfi_probe", "cmdlinepart", "physmap"]
OUR_MODULES = ("cfi_probe.c", "gen_probe.c", "cfi_util.c", "cfi_cmdset_0001.c", "fwh_lock.h", "physmap-core.c",
               "physmap-gemini.h", "physmap-ixp4xx.h", "physmap-versatile.h", "physmap-bt1-rom.h", "cmdlinepart.c")

#: what the module build does to the kernel's sources (a change rebuilds them)
MODULES_KEY = "physmap-of, no of table; cfi_cmdset_0001: unaligned writes word by word"

#: releases: name -> self-test ("ok": comes up; "panic": init exits, the kernel panics)
RELEASES = {"v1": "ok", "v2": "ok", "v3": "ok", "panic": "panic"}

ENV_TEXT = """\
bootdelay=0
baudrate=115200
fdt_high=0xffffffff
initrd_high=0xffffffff
bootcmd=bootab
slot_select=0
slot_number=2
slot_metadata=0x8f,0x00
ab_mtdparts=mtdparts={mtdparts}
ab_args=console=ttyAMA0 panic=5 cma=0 rdinit=/init quiet loglevel=4
bootcmd_a=setenv bootargs ${{ab_args}} ${{ab_mtdparts}} sstarota.slot=A; bootm {a:#010x}#conf-1 {a:#010x}#conf-1 ${{fdtcontroladdr}}
bootcmd_b=setenv bootargs ${{ab_args}} ${{ab_mtdparts}} sstarota.slot=B; bootm {b:#010x}#conf-1 {b:#010x}#conf-1 ${{fdtcontroladdr}}
"""

FW_ENV_CONFIG = """\
# device   offset  env size  erase-block size: ENV and ENV1 (a redundant env, as u-boot's)
/dev/mtd1  0x0     0x40000   0x40000
/dev/mtd2  0x0     0x40000   0x40000
"""

SLOTS_CONF = """\
# the A/B slot table (docs/AB.md)
slot A = /dev/mtd4
slot B = /dev/mtd5
booted = slot_select
env_config = /etc/fw_env.config
tries = {tries}
"""

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr /data /mnt/work /sbin /run /var/lock
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777,size=8m tmpfs /tmp
parts=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^mtdparts=//p')
for m in $(cat /modules/order); do
  case $m in
    cmdlinepart.ko) insmod /modules/$m "mtdparts=$parts" ;;
    *) insmod /modules/$m 2>/dev/null ;;
  esac || echo "init: insmod $m failed"
done
for b in /sys/block/vd*; do
  d=/dev/${b##*/}
  case $(cat $b/serial 2>/dev/null) in
    usr) mount -t squashfs -o ro $d /usr;;
    data) mount -t ext4 $d /data;;
  esac
done
mkdir -p /data/sstarota /data/tmp
chmod 700 /data/sstarota
echo "AB-UP: slot=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^sstarota.slot=//p') release=$(cat /etc/slot-release) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ "$(cat /etc/ab-selftest)" = panic ]; then
  echo "AB-PANIC: the self-test failed, init exits"
  exit 1
fi
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /mnt/work
if [ -x /mnt/work/guest-run.sh ]; then
  /mnt/work/guest-run.sh > /mnt/work/guest.log 2>&1
fi
sync
poweroff -f
"""

ENV_TOOL = """#!/bin/sh
LD_LIBRARY_PATH=/opt/ubootenv/lib exec /opt/ubootenv/bin/{name} "$@"
"""


def log_default(msg):
    sys.stderr.write(msg + "\n")


# ---------------------------------------------------------------------------- setup


def _apt_private(rig, log):
    """apt-get options for a private apt state: bookworm-backports (qemu 10) and the deb-src of
    bookworm (u-boot's source), on the mirror the system's apt uses; the system's own sources
    and lists are not touched."""
    a = rig / "apt"
    (a / "lists/partial").mkdir(parents=True, exist_ok=True)
    (a / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    pol = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True).stdout
    m = re.search(r" (https?://\S+) bookworm/main ", pol)
    mirror = m.group(1) if m else "http://deb.debian.org/debian"
    key = "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
    (a / "sources.list").write_text(
        "deb [arch=amd64 %s] %s bookworm-backports main\n"
        "deb-src [%s] %s bookworm main\n"
        "deb-src [%s] http://deb.debian.org/debian-security bookworm-security main\n" % (key, mirror, key, mirror, key))
    opts = ["-o", "Dir::Etc::SourceList=%s" % (a / "sources.list"), "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", "Dir::State::Lists=%s" % (a / "lists"), "-o", "Dir::Cache=%s" % (a / "cache")]
    if not any((a / "lists").glob("*Sources*")):
        boardvm_arm._apt(opts + ["update", "-qq"], log)
    return opts


def _kernel_names(rig_arm):
    deb = next((rig_arm / "debs").glob("linux-image-*_armhf.deb"))
    m = re.match(r"linux-image-((\d+\.\d+)\.\d+-\d+)-armmp_([^_]+)_armhf\.deb", deb.name)
    kabi, kser, kdeb = m.group(1), m.group(2), m.group(3).replace("%3a", ":")
    return {"kver": kabi + "-armmp", "kabi": kabi, "kser": kser, "kdeb": kdeb}


def _fetch(rig, k, log):
    debs = rig / "debs"
    debs.mkdir(exist_ok=True)
    want = [w.format(**k) for w in ARMHF]
    missing = [w for w in want if not list(debs.glob(re.split("[:=]", w)[0] + "_*.deb"))]
    if missing:
        log("board-vm-ab: downloading %s" % " ".join(missing))
        p = boardvm_arm._apt(["download", "-qq"] + missing, log, cwd=debs)
        if p.returncode:
            raise SystemExit("board-vm-ab: apt-get download failed:\n%s" % p.stderr)
    if not list(debs.glob("qemu-system-arm_*bpo*.deb")) or not list((rig / "src").glob("u-boot_*.dsc")):
        opts = _apt_private(rig, log)
        if not list(debs.glob("qemu-system-arm_*bpo*.deb")):
            log("board-vm-ab: downloading qemu-system-arm from bookworm-backports")
            p = boardvm_arm._apt(opts + ["download", "-qq", "qemu-system-arm"], log, cwd=debs)
            if p.returncode:
                raise SystemExit("board-vm-ab: qemu download failed:\n%s" % p.stderr)
        (rig / "src").mkdir(exist_ok=True)
        if not list((rig / "src").glob("u-boot_*.dsc")):
            log("board-vm-ab: downloading Debian's u-boot source")
            p = boardvm_arm._apt(opts + ["source", "--download-only", "-qq", "u-boot"], log, cwd=rig / "src")
            if p.returncode:
                raise SystemExit("board-vm-ab: u-boot source download failed:\n%s" % p.stderr)


def _quiet(cmd):
    """A build step whose chatter (the linker's warnings) is shown only when it fails."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode:
        raise SystemExit("board-vm-ab: %s failed (exit %d):\n%s" % (" ".join(cmd[:4]), p.returncode,
                                                                  "\n".join(p.stdout.splitlines()[-30:])))


def _qemu(rig):
    q = rig / "qemu"
    if not (q / "usr/bin/qemu-system-arm").exists():
        shutil.rmtree(q, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(next((rig / "debs").glob("qemu-system-arm_*bpo*.deb"))), str(q)])
        (q / "no-modules").mkdir()  # QEMU_MODULE_DIR: keeps qemu 10 away from the system 7.2's modules


def _uboot(rig, log):
    """u-boot.bin for qemu_arm from Debian's source (its patches applied by dpkg-source), Debian's
    defconfig plus a redundant env in ENV1 and the bootab command."""
    out = rig / "u-boot.bin"
    bootab = (HERE / "boardab" / "bootab.c").read_bytes()
    stamp = rig / "u-boot.stamp"
    key = "%s %s" % (UBOOT_CONFIG.strip(), __import__("hashlib").sha256(bootab).hexdigest())
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return
    src = rig / "src/u-boot"
    if not (src / "Makefile").exists():
        shutil.rmtree(src, ignore_errors=True)
        _run(["dpkg-source", "--no-check", "-x", str(next((rig / "src").glob("u-boot_*.dsc"))), str(src)],
             stdout=subprocess.DEVNULL)
    (src / "cmd/bootab.c").write_bytes(bootab)
    mk = (src / "cmd/Makefile").read_text()
    if "bootab.o" not in mk:
        (src / "cmd/Makefile").write_text(mk.replace("obj-y += boot.o\n", "obj-y += boot.o\nobj-y += bootab.o\n", 1))
    build = rig / "src/build"
    log("board-vm-ab: building u-boot (qemu_arm, redundant env, bootab)")
    make = ["make", "-s", "-C", str(src), "O=%s" % build, "CROSS_COMPILE=arm-linux-gnueabihf-"]
    _run(make + ["qemu_arm_defconfig"], stdout=subprocess.DEVNULL)
    with open(build / ".config", "a") as f:
        f.write(UBOOT_CONFIG)
    _run(make + ["olddefconfig"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = (build / ".config").read_text()
    for line in UBOOT_CONFIG.split():
        if line not in conf.splitlines():
            raise SystemExit("board-vm-ab: u-boot's config lost %s" % line)
    _quiet(make + ["-j%d" % (os.cpu_count() or 2), "u-boot.bin"])
    shutil.copy(build / "u-boot.bin", out)
    stamp.write_text(key)


def _modules(rig, k, log):
    """The flash drivers the armmp kernel lacks, built against its headers (docs/AB.md)."""
    kmod = rig / "kmod"
    stamp = rig / "kmod.stamp"
    if (kmod / "physmap.ko").exists() and stamp.exists() and stamp.read_text() == MODULES_KEY:
        return
    log("board-vm-ab: building the CFI flash modules for %s" % k["kver"])
    kh, ksrc = rig / "kh", rig / "ksrc"
    for d in (kh, ksrc, kmod):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    debs = rig / "debs"
    for pat in ("linux-headers-%s_*.deb" % k["kver"], "linux-headers-%s-common_*.deb" % k["kabi"],
                "linux-kbuild-%s_*.deb" % k["kser"]):
        _run(["dpkg-deb", "-x", str(next(debs.glob(pat))), str(kh)])
    mf = kh / ("usr/src/linux-headers-%s/Makefile" % k["kver"])
    mf.write_text(mf.read_text().replace("include /usr/src/", "include %s/usr/src/" % kh))
    base = "linux-source-%s/drivers/mtd" % k["kser"]
    members = ["%s/%s/%s" % (base, "chips" if n.startswith(("cfi", "gen", "fwh")) else "parsers"
                             if n.startswith("cmdline") else "maps", n) for n in OUR_MODULES]
    src = next(debs.glob("linux-source-%s_*.deb" % k["kser"]))
    sh = ("dpkg-deb --fsys-tarfile '%s' | tar -xO ./usr/src/linux-source-%s.tar.xz | tar -xJ -C '%s' %s"
          % (src, k["kser"], ksrc, " ".join(members)))
    _run(["sh", "-c", sh])
    for m in members:
        shutil.copy(ksrc / m, kmod)
    # the amd64 modpost sizes struct of_device_id for 64 bit: drop the (autoload-only) table
    pc = kmod / "physmap-core.c"
    pc.write_text(pc.read_text().replace("MODULE_DEVICE_TABLE(of, of_flash_match);\n", ""))
    # qemu's pflash times out a buffer write that starts inside its write buffer (libubootenv's
    # one-byte "obsolete" flag of a redundant env): such writes go word by word
    cs = kmod / "cfi_cmdset_0001.c"
    text = cs.read_text()
    head = "\tstruct kvec vec;\n\n\tvec.iov_base = (void *) buf;"
    assert text.count(head) == 1
    cs.write_text(text.replace(head, "\tstruct kvec vec;\n\n\tif ((to | len) & 63)\n\t\treturn cfi_intelext_write_words("
                               "mtd, to, len, retlen, buf);\n\tvec.iov_base = (void *) buf;"))
    (kmod / "Kbuild").write_text(
        "obj-m := cfi_util.o gen_probe.o cfi_probe.o cfi_cmdset_0001.o physmap.o cmdlinepart.o\n"
        "physmap-y := physmap-core.o\nccflags-y += -DCONFIG_MTD_PHYSMAP_OF=1 -DCONFIG_MTD_CFI_INTELEXT=1\n")
    _quiet(["make", "-s", "-C", str(kh / ("usr/src/linux-headers-%s" % k["kver"])), "M=%s" % kmod, "ARCH=arm",
            "CROSS_COMPILE=arm-linux-gnueabihf-", "modules"])
    for ko in kmod.glob("*.ko"):
        _run(["arm-linux-gnueabihf-strip", "--strip-debug", str(ko)])
    shutil.rmtree(ksrc)
    stamp.write_text(MODULES_KEY)


def _text_offset(rig, rig_arm):
    """Where the kernel runs above the start of RAM (0x208000 for armmp): arch/arm/Makefile's
    textofs-* rules against the kernel's .config."""
    deb = next((rig_arm / "debs").glob("linux-image-*_armhf.deb"))
    cfg = subprocess.run("dpkg-deb --fsys-tarfile '%s' | tar -xO --wildcards './boot/config-*'" % deb, shell=True,
                         capture_output=True, check=True).stdout.decode()
    enabled = set(re.findall(r"^(CONFIG_\w+)=y$", cfg, re.M))
    makefile = next((rig / "kh/usr/src").glob("linux-headers-*-common")) / "arch/arm/Makefile"
    ofs = None
    for m in re.finditer(r"^textofs-(y|\$\((CONFIG_\w+)\))\s*:=\s*(0x[0-9a-fA-F]+)", makefile.read_text(), re.M):
        if m.group(1) == "y" or m.group(2) in enabled:
            ofs = int(m.group(3), 16)
    return ofs


def _kernel_image(zimage, out):
    """The uncompressed Image out of Debian's zImage (one xz stream), gzipped for the FIT."""
    data = zimage.read_bytes()
    for m in re.finditer(re.escape(b"\xfd7zXZ\x00"), data):
        try:
            image = lzma.LZMADecompressor().decompress(data[m.start():])
            break
        except lzma.LZMAError:
            continue
    else:
        raise SystemExit("board-vm-ab: no xz payload in %s" % zimage)
    out.write_bytes(gzip.compress(image, 6, mtime=0))
    return len(image)


def _newc(entries):
    """A cpio newc archive of (path, mode, data, (rdev major, minor)) entries; no root needed."""
    out = bytearray()
    for ino, (path, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        name = path.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                                                          len(name), 0))
        out += hdr.encode() + name
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _tree(root):
    entries = []
    for dp, dns, fns in os.walk(root):
        dns.sort()
        rel = os.path.relpath(dp, root)
        if rel != ".":
            entries.append((rel, 0o040755, b"", (0, 0)))
        for fn in sorted(fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]):
            p = os.path.join(dp, fn)
            r = os.path.normpath(os.path.join(rel, fn))
            if os.path.islink(p):
                entries.append((r, 0o120777, os.readlink(p).encode(), (0, 0)))
            else:
                mode = 0o100755 if os.access(p, os.X_OK) else 0o100644
                entries.append((r, mode, Path(p).read_bytes(), (0, 0)))
    return entries


def _stage(rig, rig_arm):
    """The initramfs files every release shares: busybox, the modules, fw_printenv/fw_setenv
    (libubootenv, run with the glibc of /usr), /init, the board's config."""
    stage = rig / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "sbin", "etc/sstarota", "modules", "opt/ubootenv/bin", "opt/ubootenv/lib", "root"):
        (stage / d).mkdir(parents=True)
    os.symlink("usr/lib", stage / "lib")
    tmp = rig / "deb.d"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(next((rig_arm / "debs").glob("busybox-static_*.deb"))), str(tmp)])
    for pat in ("libubootenv0.1_*.deb", "libubootenv-tool_*.deb"):
        _run(["dpkg-deb", "-x", str(next((rig / "debs").glob(pat))), str(tmp)])
    shutil.copy2(tmp / "bin/busybox", stage / "bin/busybox")
    lib = next(p for p in tmp.rglob("libubootenv.so.0*") if not p.is_symlink())
    shutil.copy2(lib, stage / "opt/ubootenv/lib/libubootenv.so.0")
    shutil.copy2(tmp / "usr/bin/fw_printenv", stage / "opt/ubootenv/bin/fw_printenv")
    os.symlink("fw_printenv", stage / "opt/ubootenv/bin/fw_setenv")
    shutil.rmtree(tmp)
    for name in ("fw_printenv", "fw_setenv"):
        (stage / "sbin" / name).write_text(ENV_TOOL.format(name=name))
        os.chmod(stage / "sbin" / name, 0o755)
        os.symlink("/sbin/" + name, stage / "etc" / name)  # where SigmaStar's scripts call them
    (stage / "etc/fw_env.config").write_text(FW_ENV_CONFIG)
    (stage / "etc/sstarota/slots.conf").write_text(SLOTS_CONF.format(tries=TRIES))
    (stage / "etc/sstarota/board.conf").write_text("state_dir = /data/sstarota\n")
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "init").write_text(INIT)
    os.chmod(stage / "init", 0o755)
    # the stock modules and ours, dependencies first
    idx = rig / "modidx"
    shutil.rmtree(idx, ignore_errors=True)
    idx.mkdir()
    moddir = next((rig_arm / "kroot/lib/modules").iterdir())
    for dp, _, fns in os.walk(moddir):
        for fn in fns:
            if fn.endswith(".ko") and not (rig / "kmod" / fn).exists():
                os.symlink(os.path.join(dp, fn), idx / fn)
    for ko in (rig / "kmod").glob("*.ko"):
        os.symlink(ko, idx / ko.name)
    names = []
    for _, path in module_order(idx, MODULES, required=False):
        shutil.copy(path, stage / "modules" / os.path.basename(path))
        names.append(os.path.basename(path))
    (stage / "modules/order").write_text("\n".join(names) + "\n")
    shutil.rmtree(idx)
    return stage


ITS = """/dts-v1/;
/ {
    description = "sstarota A/B board slot image %(rel)s";
    #address-cells = <1>;
    images {
        kernel {
            data = /incbin/("%(kimage)s");
            type = "kernel"; arch = "arm"; os = "linux"; compression = "gzip";
            load = <%(kload)#x>; entry = <%(kload)#x>;
            hash-1 { algo = "sha256"; };
        };
        ramdisk {
            data = /incbin/("%(initrd)s");
            type = "ramdisk"; arch = "arm"; os = "linux"; compression = "none";
            load = <%(rdload)#x>; entry = <%(rdload)#x>;
            hash-1 { algo = "sha256"; };
        };
    };
    configurations {
        default = "conf-1";
        conf-1 { description = "%(rel)s"; kernel = "kernel"; ramdisk = "ramdisk"; };
    };
};
"""


def _images(rig, rig_arm, log):
    """The slot images (a FIT per release, and a corrupt one), the env and the factory flash."""
    img = rig / "img"
    key = json.dumps([ENV_TEXT, INIT, SLOTS_CONF, FW_ENV_CONFIG, MTDPARTS, sorted(RELEASES.items()), TRIES,
                      (rig_arm / "vmlinuz").stat().st_size, MODULES_KEY])
    if (img / "flash-factory.img").exists() and (img / "stamp").exists() and (img / "stamp").read_text() == key:
        return
    log("board-vm-ab: building the slot images, the env and the factory flash")
    shutil.rmtree(img, ignore_errors=True)
    img.mkdir()
    kimage = img / "Image.gz"
    size = _kernel_image(rig_arm / "vmlinuz", kimage)
    mib = (1 << 20) - 1
    kload = RAM + _text_offset(rig, rig_arm)
    rdload = (kload + size + (2 << 20) + mib) & ~mib
    stage = _stage(rig, rig_arm)
    base = _tree(stage)
    layout = {"mtdparts": MTDPARTS, "slot_off": SLOT_OFF, "slot_size": SLOT_SIZE, "env_off": ENV_OFF,
              "tries": TRIES, "images": {}}
    for rel, selftest in RELEASES.items():
        initrd = img / ("initrd-%s.cpio.gz" % rel)
        entries = [("dev", 0o040755, b"", (0, 0)), ("dev/console", 0o020600, b"", (5, 1))] + base
        entries += [("etc/slot-release", 0o100644, (rel + "\n").encode(), (0, 0)),
                    ("etc/ab-selftest", 0o100644, (selftest + "\n").encode(), (0, 0))]
        initrd.write_bytes(gzip.compress(_newc(entries), 9, mtime=0))
        if rdload + initrd.stat().st_size > UBOOT_LMB_FLOOR:
            raise SystemExit("board-vm-ab: initramfs %s ends at %#x, above u-boot's %#x"
                             % (rel, rdload + initrd.stat().st_size, UBOOT_LMB_FLOOR))
        its = img / ("slot-%s.its" % rel)
        its.write_text(ITS % {"rel": rel, "kimage": kimage, "initrd": initrd, "kload": kload, "rdload": rdload})
        _run(["mkimage", "-q", "-f", str(its), str(img / ("slot-%s.itb" % rel))], stdout=subprocess.DEVNULL)
        its.unlink()
        initrd.unlink()
    shutil.rmtree(stage)
    kimage.unlink()
    # a slot image hit by bit rot or a bad write: the FIT's sha256 of the kernel catches it
    bad = bytearray((img / "slot-v3.itb").read_bytes())
    mid = len(bad) // 3
    bad[mid:mid + 65536] = bytes(65536)
    (img / "slot-corrupt.itb").write_bytes(bad)
    for itb in sorted(img.glob("slot-*.itb")):
        if itb.stat().st_size > SLOT_SIZE:
            raise SystemExit("board-vm-ab: %s is larger than a slot" % itb)
        layout["images"][itb.stem[5:]] = {"size": itb.stat().st_size,
                                          "sha256": __import__("hashlib").sha256(itb.read_bytes()).hexdigest()}
    text = ENV_TEXT.format(mtdparts=MTDPARTS, a=BANK1 + SLOT_OFF["A"], b=BANK1 + SLOT_OFF["B"])
    (img / "env.txt").write_text(text)
    _run(["mkenvimage", "-r", "-s", "%#x" % ENV_SIZE, "-o", str(img / "env.bin"), str(img / "env.txt")])
    flash = bytearray(b"\xff" * BANK_SIZE)
    env = (img / "env.bin").read_bytes()
    flash[ENV_OFF[0]:ENV_OFF[0] + len(env)] = env
    v1 = (img / "slot-v1.itb").read_bytes()
    flash[SLOT_OFF["A"]:SLOT_OFF["A"] + len(v1)] = v1
    (img / "flash-factory.img").write_bytes(flash)
    (img / "layout.json").write_text(json.dumps(layout, indent=1))
    (img / "stamp").write_text(key)


def setup(rig=DEFAULT_RIG, log=log_default):
    """Everything the A/B board needs, from Debian packages, cached in RIG. Idempotent: a warm
    call checks stamps and returns."""
    rig = Path(rig)
    rig.mkdir(parents=True, exist_ok=True)
    rig_arm = boardvm_arm.setup(log=log)
    missing = [p for p, tool in HOST_PACKAGES.items()
               if not (os.path.exists(tool) if tool.startswith("/")
                       else shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin"))]
    if missing:
        log("board-vm-ab: installing %s" % " ".join(missing))
        boardvm_arm._apt(["update", "-qq"], log)
        p = boardvm_arm._apt(["install", "-y", "-qq", "--no-install-recommends"] + missing, log)
        if p.returncode:
            raise SystemExit("board-vm-ab: apt-get install %s failed:\n%s" % (" ".join(missing), p.stderr))
    k = _kernel_names(Path(rig_arm))
    _fetch(rig, k, log)
    _qemu(rig)
    _modules(rig, k, log)
    _uboot(rig, log)
    _images(rig, Path(rig_arm), log)
    return rig


# ---------------------------------------------------------------------------- the VM


class TraceWatch(threading.Thread):
    """qemu's pflash trace, read from a FIFO as qemu writes it: counts the erases of the env
    sectors and of a slot, and the buffer writes after the last erase, and SIGKILLs qemu the
    moment an armed count is reached (a power cut at a chosen point of a real flash write).
    Once it fires it stops reading: qemu blocks on the full one-page pipe until the kill lands."""

    def __init__(self, fifo):
        super().__init__(daemon=True)
        self.fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        fcntl.fcntl(self.fd, 1031, 4096)  # F_SETPIPE_SZ: one page
        self.stopped = False
        self.counts = {"env": 0, "A": 0, "B": 0}
        self.flushes = 0
        self.last = None
        self.pid = None
        self.trigger = None  # (region, erases, flushes after the last erase of it)
        self.fired = None
        self.lock = threading.Lock()

    @staticmethod
    def region(offset):
        if offset < ENV_OFF[1] + ENV_SIZE:  # ENV or ENV1 (u-boot erases a copy as two of its sectors)
            return "env"
        for slot, off in SLOT_OFF.items():
            if off <= offset < off + SLOT_SIZE:
                return slot
        return None

    def run(self):
        buf = b""
        while not self.stopped:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                if not r:
                    continue
                buf += os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except (OSError, ValueError):  # closed by stop()
                return
            *lines, buf = buf.split(b"\n")
            for line in lines:
                with self.lock:
                    m = re.search(rb"flash1: block erase offset:(0x[0-9a-f]+)", line)
                    if m:
                        reg = self.region(int(m.group(1), 16))
                        if reg:
                            self.counts[reg] += 1
                            self.last = reg
                            self.flushes = 0
                    elif b"block write flush" in line:
                        self.flushes += 1
                    t = self.trigger
                    if t and self.pid and self.counts[t[0]] >= t[1] and self.last == t[0] and self.flushes >= t[2]:
                        os.kill(self.pid, signal.SIGKILL)
                        self.fired = (t[0], self.counts[t[0]], self.flushes)
                        self.trigger = None
                        return

    def arm(self, region, erases, flushes=0):
        """Cut the power at the `erases`-th erase (from now) of region ('env', 'A', 'B') plus
        `flushes` buffer writes after it."""
        with self.lock:
            self.fired = None
            self.trigger = (region, self.counts[region] + erases, flushes)

    def stop(self):
        self.stopped = True
        try:
            os.close(self.fd)
        except OSError:
            pass


class Boot:
    """What one boot showed on the console: u-boot's bootab passes, the slot Linux came up in."""

    def __init__(self, text):
        self.text = text
        self.picks = re.findall(r"bootab: booting slot (\w) \(slot_select=(\d) slot_metadata=([0-9a-fx,]+)\)", text)
        self.failed = re.findall(r"bootab: slot (\w) did not boot", text)
        self.fallbacks = re.findall(r"bootab: slot (\w) has no tries left, falling back to slot (\w)", text)
        up = re.findall(r"AB-UP: slot=(\w*) release=(\S+)", text)
        self.slot, self.release = up[-1] if up else (None, None)
        self.panics = len(re.findall(r"AB-PANIC", text))
        self.env_lost = "bad CRC, using default environment" in text

    def __repr__(self):
        return "Boot(picks=%s failed=%s fallbacks=%s up=%s/%s)" % (
            [p[0] for p in self.picks], self.failed, self.fallbacks, self.slot, self.release)


class ABBoardVM(Guest):
    """The A/B board: u-boot from the NOR flash file `flash` (kept across power cuts), Debian's
    armhf Python on /usr, an ext4 data disk (the state directory, kept too), the work share."""

    def __init__(self, rig=DEFAULT_RIG, work=None, rig_arm=None, mem=64, boot_timeout=300):
        self.rig = Path(rig)
        self.rig_arm = Path(rig_arm or boardvm_arm.DEFAULT_RIG)
        self.work = Path(work)
        self.mem = mem
        self.boot_timeout = boot_timeout
        self.flash = self.work / "flash.img"
        self.data = self.work / "data.img"
        self.proc = None
        self.watch = None
        self.seq = 0
        self.mark = 0
        self.layout = json.loads((self.rig / "img/layout.json").read_text())

    # ------------------------------------------------------------------ power
    def factory(self, data_size=64 << 20):
        """Factory state: the flash as it leaves the factory (env, slot A = v1, B erased), a fresh data disk."""
        shutil.copy(self.rig / "img/flash-factory.img", self.flash)
        if self.data.exists():
            self.data.unlink()
        with open(self.data, "wb") as f:
            f.truncate(data_size)
        _run(["mkfs.ext4", "-q", "-F", "-L", "data", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.data)])

    def start(self):
        """Power on; returns the Boot once the agent answers."""
        w = self.work
        fresh_work(w, ("req", "resp"))
        (w / "guest-run.sh").write_text(boardvm_arm.AGENT)
        os.chmod(w / "guest-run.sh", 0o755)
        trace = w / "qemu-trace"
        if trace.exists():
            trace.unlink()
        os.mkfifo(trace)
        if self.watch:
            self.watch.stop()
        self.watch = TraceWatch(trace)
        self.watch.start()
        console = w / "console.log"
        self.mark = console.stat().st_size if console.exists() else 0
        q = self.rig / "qemu/usr/bin/qemu-system-arm"
        cmd = [str(q), "-M", "virt", "-cpu", "cortex-a7", "-smp", "1", "-m", str(self.mem), "-accel", "tcg",
               "-nic", "none", "-display", "none", "-audio", "none", "-monitor", "none",
               "-chardev", "file,id=con,path=%s,append=on" % console, "-serial", "chardev:con",
               "-bios", str(self.rig / "u-boot.bin"),
               "-drive", "if=pflash,format=raw,unit=1,file=%s" % self.flash,
               "-D", str(trace), "-trace", "pflash_write_block_erase", "-trace", "pflash_write_block_flush"]
        for serial, path, ro in (("usr", self.rig_arm / "usr.sqfs", True), ("data", self.data, False)):
            cmd += ["-drive", "if=none,id=%s,file=%s,format=raw%s" % (serial, path, ",readonly=on" if ro else ""),
                    "-device", "virtio-blk-device,drive=%s,serial=%s" % (serial, serial)]
        cmd += ["-fsdev", "local,id=work,path=%s,security_model=none" % w,
                "-device", "virtio-9p-device,fsdev=work,mount_tag=work"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(w / "qemu.log", "a"),
                                     env=dict(os.environ, QEMU_MODULE_DIR=str(self.rig / "qemu/no-modules")))
        self.watch.pid = self.proc.pid
        return self.wait_up()

    def console_since(self, mark=None):
        with open(self.work / "console.log", "rb") as f:
            f.seek(self.mark if mark is None else mark)
            return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", f.read().decode("utf-8", "replace"))

    def wait_up(self, timeout=None):
        """Wait for the agent of the next boot (through any u-boot passes, panics and resets);
        the Boot the console shows since the reset."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        t0 = time.monotonic()
        while not (self.work / "ready").exists():
            if self.proc.poll() is not None:
                raise RuntimeError("the A/B board stopped while booting: %r" % Boot(self.console_since()))
            if time.monotonic() > deadline:
                text = self.console_since()
                raise RuntimeError("the A/B board did not come up in %ds: %r\n%s"
                                   % (timeout or self.boot_timeout, Boot(text), text[-2000:]))
            time.sleep(0.05)
        boot = Boot(self.console_since())
        boot.seconds = time.monotonic() - t0
        return boot

    def reboot(self, timeout=None, wait=True):
        """`reboot -f` in the guest (a warm reset: u-boot again, the same qemu); the next Boot
        (wait=False: return at once, e.g. for a power cut armed on u-boot's env save)."""
        (self.work / "ready").unlink()
        self.mark = (self.work / "console.log").stat().st_size
        fresh_work(self.work, ("req", "resp"))
        self.submit_raw('rm -f "$0"; sync; reboot -f')  # the request goes first: the next boot's agent must not see it
        return self.wait_up(timeout) if wait else None

    def power_cut(self):
        """SIGKILL qemu: nothing flushed or finished; the flash and data files stay as they are."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None
        if self.watch:
            self.watch.stop()
            self.watch = None

    def wait_dead(self, timeout=300):
        """Wait for qemu to end (a trace trigger killing it); True when it did."""
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            (self.work / "req" / "STOP").write_text("")
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.power_cut()

    # ------------------------------------------------------------------ commands
    def submit_raw(self, cmd, timeout=600):
        self.seq += 1
        name = "%06d" % self.seq
        tmp = self.work / "req" / (name + ".tmp")
        tmp.write_text("# timeout %d\n%s\n" % (timeout, cmd))
        os.rename(tmp, self.work / "req" / (name + ".sh"))
        return name

    def run(self, cmd, timeout=600):
        """Run a shell command in the guest; Result(rc, out, err)."""
        name = self.submit_raw(cmd, timeout)
        return self.answer(name, cmd, timeout)

    def answer(self, name, cmd="", timeout=600):
        return wait_answer(self.work, name, lambda: self.proc is not None and self.proc.poll() is None, "A/B board",
                           cmd, timeout)

    def env(self, *names):
        """{name: value} of the u-boot env as Linux's fw_printenv reads it."""
        out = self.run("fw_printenv %s" % " ".join(names)).check().out
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def slot_sha256(self, slot, size):
        out = self.run("head -c %d %s | sha256sum" % (size, SLOT_MTD[slot])).check().out
        return out.split()[0]


def main(argv=None):
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="board-vm-ab", description="Set up and boot the A/B u-boot board.")
    ap.add_argument("--rig", default=str(DEFAULT_RIG))
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="qemu 10, u-boot with a redundant env, flash modules, slot images")
    r = sub.add_parser("run", help="boot the factory flash, run shell commands, power off")
    r.add_argument("commands", nargs="+")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    setup(a.rig)
    if a.cmd == "setup":
        print("A/B board ready in %s (%.0f s)" % (a.rig, time.monotonic() - t0))
        return 0
    work = Path(tempfile.mkdtemp(prefix="board-ab-"))
    vm = ABBoardVM(a.rig, work)
    vm.factory()
    try:
        boot = vm.start()
        print("booted %r in %.1f s" % (boot, boot.seconds))
        rc = 0
        for c in a.commands:
            res = vm.run(c)
            sys.stdout.write(res.out)
            sys.stderr.write(res.err)
            rc = rc or res.rc
        return rc
    finally:
        vm.stop()


if __name__ == "__main__":
    sys.exit(main())
