"""`make image-ota` in a tree shaped like an ALKAID project, with mk/ota.mk."""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import package

from helpers import GOLDEN

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PROJECT_MAKEFILE = """\
IMAGE_DIR := $(CURDIR)/image
image-ota:
\t$(MAKE) -C image ota_images
"""

IMAGE_MAKEFILE = """\
# as ALKAID's project/image/makefile: the suffixes, the partition config, then ota.mk
OTABLK := _otablk
PATSIZE := _patsize
FSTYPE := _fstype
BLKENV := _blkenv
OTAMASK := _otamask
IMAGEDIR := $(CURDIR)/output/images
include configs/partitions.mk
include {ota_mk}
"""

PARTITIONS = """\
OTA_IMAGE_LIST = ipl kernel rootfs customer{extra}
ipl$(OTABLK) = /dev/mtdblock0
ipl$(PATSIZE) = 0x10000
kernel$(OTABLK) = /dev/mtdblock2 /dev/mtdblock3
kernel$(PATSIZE) = 0x500000
kernel$(BLKENV) = kernel_file_size=0x18bb9 bootcmd_ota=1
kernel$(OTAMASK) = 1 0
rootfs$(OTABLK) = /dev/mtdblock4
rootfs$(PATSIZE) = 0x800000
rootfs$(FSTYPE) = squashfs
customer$(OTABLK) = /dev/ubi0_1
customer$(PATSIZE) = 0x1000000
customer$(FSTYPE) = ubifs
"""


def make_tree(tmp_path, extra=""):
    root = tmp_path / "alkaid" / "project"
    image = root / "image"
    (image / "configs").mkdir(parents=True)
    (root / "makefile").write_text(PROJECT_MAKEFILE)
    (image / "makefile").write_text(IMAGE_MAKEFILE.format(ota_mk=PROJECT / "mk" / "ota.mk"))
    (image / "configs" / "partitions.mk").write_text(PARTITIONS.format(extra=extra))
    out = image / "output" / "images"
    out.mkdir(parents=True)
    inp = GOLDEN / "v0.4" / "in"
    shutil.copy(inp / "images/ipl_s.bin", out / "ipl_s.bin")
    shutil.copy(inp / "images/kernel", out / "kernel")
    shutil.copy(inp / "images/kernel.old", out / "rootfs.sqfs")
    shutil.copy(inp / "images/customer.ubifs", out / "customer.ubifs")
    shutil.copy(inp / "begin.sh", tmp_path / "begin.sh")
    shutil.copy(inp / "end.sh", tmp_path / "end.sh")
    return root, out


def run_make(root, stdin=None, **env):
    e = dict(os.environ, PATH="%s:%s" % (BIN, os.environ["PATH"]))
    e.update(env)
    return subprocess.run(["make", "-s", "-C", str(root), "image-ota"], input=stdin, capture_output=True, text=True,
                          env=e)


def vendor_sequence(tmp_path, out, fmt):
    """The package the vendor's make flow produces for the same answers, per the facts file:
    otapack -c with the scripts, then per partition `-s IMAGE -d TARGET -t PATSIZE -m 0 KIND`
    (0.4: once per target; 1.6: all targets, --default-mask and -l PART), the blkenv script
    with --script-add."""
    pkg = tmp_path / ("expected-%s.bin" % fmt)
    ota = str(BIN / "otapack")
    env_sh = out / "kernel_otaenv.sh"  # written by the make flow: the same lines the vendor writes
    assert env_sh.read_text() == "/etc/fw_setenv kernel_file_size 0x18bb9\n/etc/fw_setenv bootcmd_ota 1\n"
    cmds = [["-c", pkg, "-b", tmp_path / "begin.sh", "-e", tmp_path / "end.sh"] + (["--format", "1.6"] if fmt == "1.6" else []),
            ["-s", out / "ipl_s.bin", "-d", "/dev/mtdblock0", "-t", "0x10000", "-m", "0", "--block-update", "-a", pkg]]
    if fmt == "1.6":
        cmds[1] += ["-l", "ipl"]
        cmds.append(["-s", out / "kernel", "-d", "/dev/mtdblock2 /dev/mtdblock3", "-t", "0x500000", "-m", "0",
                     "--block-update", "--default-mask", "1 0", "-l", "kernel", "-a", pkg])
    else:
        for t in ("/dev/mtdblock2", "/dev/mtdblock3"):
            cmds.append(["-s", out / "kernel", "-d", t, "-t", "0x500000", "-m", "0", "--block-update", "-a", pkg])
    cmds.append(["-s", env_sh, "-d", "kernel_otaenv.sh", "--script-add", "-a", pkg])
    cmds.append(["-s", out / "customer.ubifs", "-d", "/dev/ubi0_1", "-t", "0x1000000", "-m", "0", "--ubi-update", "-a",
                 pkg] + (["-l", "customer"] if fmt == "1.6" else []))
    for c in cmds:
        subprocess.run([ota] + [str(x) for x in c], check=True)
    return pkg.read_bytes()


def check_package(out, expected, fmt):
    raw = gzip.decompress((out / "SStarOta.bin.gz").read_bytes())
    if fmt == "1.6":  # the tool id aside, and so the header MD5
        assert raw[16:64] == expected[16:64] and raw[128:] == expected[128:]
    else:
        assert raw == expected
    reader, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    return reader, records


@pytest.mark.parametrize("fmt", ["0.4", "1.6"])
def test_make_image_ota_interactive_and_non_interactive(tmp_path, fmt):
    root, out = make_tree(tmp_path)
    answers = "%s\n%s\nyes\ny\nno\nyes\n" % (tmp_path / "begin.sh", tmp_path / "end.sh")
    proc = run_make(root, stdin=answers, OTA_FORMAT=fmt)
    assert proc.returncode == 0, proc.stderr
    for prompt in ("Start scripts:", "End scripts:", "Make ipl ?(yes/no)", "Make kernel ?(yes/no)",
                   "Make rootfs ?(yes/no)", "Make customer ?(yes/no)"):
        assert prompt in proc.stdout
    expected = vendor_sequence(tmp_path, out, fmt)
    reader, records = check_package(out, expected, fmt)
    ops = [(r.op_name, r.dst) for r in records]
    if fmt == "0.4":
        assert ops == [("block", "/dev/mtdblock0"), ("block", "/dev/mtdblock2"), ("block", "/dev/mtdblock3"),
                       ("script", "kernel_otaenv.sh"), ("ubi", "/dev/ubi0_1")]
    else:
        assert ops == [("block", "/dev/mtdblock0"), ("block", "/dev/mtdblock2 /dev/mtdblock3"),
                       ("script", "kernel_otaenv.sh"), ("ubi", "/dev/ubi0_1")]
        assert records[1].masks[:2] == (1, 0) and records[1].label == "kernel"
        assert (out / "SStarOta.layout.txt").read_text().splitlines()[1:3] == [
            "1,kernel,/dev/mtdblock2,0x1", "1,kernel,/dev/mtdblock3,0x0"]
    first = (out / "SStarOta.bin.gz").read_bytes()
    # the same again, non-interactively
    (out / "SStarOta.bin.gz").unlink()
    proc = run_make(root, OTA_FORMAT=fmt, OTA_PARTS="ipl kernel customer", OTA_START_SCRIPT=str(tmp_path / "begin.sh"),
                    OTA_END_SCRIPT=str(tmp_path / "end.sh"))
    assert proc.returncode == 0, proc.stderr
    assert "?(yes/no)" not in proc.stdout
    assert (out / "SStarOta.bin.gz").read_bytes() == first  # reproducible too
    # and it installs
    inst = tmp_path / "root"
    inst.mkdir()
    r = subprocess.run([str(BIN / "otaunpack"), "-x", str(out / "SStarOta.bin.gz"), "--root", str(inst), "-q",
                        "--no-scripts"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (inst / "dev/mtdblock2").read_bytes() == (out / "kernel").read_bytes()
    assert (inst / "dev/ubi0_1").read_bytes() == (out / "customer.ubifs").read_bytes()
    assert (inst / "dev/mtdblock3").exists() == (fmt == "0.4")  # 1.6: mask 0


def test_all_partitions_and_manifest(tmp_path):
    root, out = make_tree(tmp_path)
    proc = run_make(root, OTA_PARTS="all", OTA_MANIFEST="1")
    assert proc.returncode == 0, proc.stderr
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [r.dst for r in records][-2:] == ["/dev/ubi0_1", "sstarota-manifest.sh"]
    assert ("block", "/dev/mtdblock4") in [(r.op_name, r.dst) for r in records]  # rootfs (squashfs)


@pytest.mark.parametrize("case,needle", [
    ("no-otablk", "partition 'misc' is in OTA_IMAGE_LIST but misc_otablk is not set"),
    ("missing-image", "partition 'customer': image"),
    ("unknown-part", "OTA_PARTS names 'nope', which is not in OTA_IMAGE_LIST"),
])
def test_clear_errors(tmp_path, case, needle):
    root, out = make_tree(tmp_path, extra=" misc" if case == "no-otablk" else "")
    if case == "missing-image":
        (out / "customer.ubifs").unlink()
    parts = "nope" if case == "unknown-part" else "all"
    proc = run_make(root, OTA_PARTS=parts)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert not (out / "SStarOta.bin.gz").exists()
