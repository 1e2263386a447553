"""`make image-ota` in trees shaped like ALKAID projects, with mk/ota.mk; the binary drop-in.

The expected packages are built here from the vendor flow's documented commands (otapack -c,
then per partition `-s IMAGE -d TARGET -t PATSIZE -m 0 KIND -a`, 0.4 once per target with the
_blkenv script after the partition, 1.6 one record with --default-mask and -l), with scripts
written here byte for byte, and compared with what make writes.
"""

import gzip
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import package

from support import VENDOR_TOOL_ID, made, otapack

PROJECT = Path(__file__).resolve().parent.parent
OTA_MK = PROJECT / "mk" / "ota.mk"
BIN = Path(sys.executable).parent
OTAPACK = str(BIN / "otapack")
BANNER_16 = "Ota pack internal version 1.6 commit: %s sizeof pack cfg is 1640" % VENDOR_TOOL_ID
BANNER_04 = "Ota pack internal version 0.4 commit: 3270cf4e8aa22545c8528e44dcad337f9cc30088"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None,
                                reason="needs make and bash")

PROJECT_MAKEFILE = """\
PROJ_ROOT := $(CURDIR)
export PROJ_ROOT
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
RESOUCE := _resouce
FLASH_TYPE := {flash}
IMAGEDIR := $(PROJ_ROOT)/image/output/images
include configs/partitions.mk
include {ota_mk}
"""

# 2021 (0.4) spinand config, in the SDK's syntax: the kernel's env lines as shell text for echo -e
CONFIG_2021 = r"""
OTA_IMAGE_LIST = ipl boot kernel rootfs customer misc
ipl$(OTABLK) = /dev/mtdblock0
ipl$(PATSIZE) = 0x60000
boot$(OTABLK) = /dev/mtdblock1 /dev/mtdblock2
boot$(PATSIZE) = 0x40000
kernel$(RESOUCE) = $(IMAGEDIR)/kernel
kernel$(OTABLK) = /dev/mtdblock3 /dev/mtdblock4
kernel$(PATSIZE) = 0x500000
kernel$(BLKENV) := kernel_file_size $$(printf 0x%x `stat -c "%s" $(kernel$(RESOUCE))`)\n
kernel$(BLKENV) += recovery_file_size $$(printf 0x%x `stat -c "%s" $(kernel$(RESOUCE))`)
rootfs$(OTABLK) = /dev/mtdblock5
rootfs$(PATSIZE) = 0x800000
rootfs$(FSTYPE) = squashfs
customer$(OTABLK) = /dev/ubi0_0
customer$(PATSIZE) = 0x1000000
customer$(FSTYPE) = ubifs
misc$(OTABLK) = /dev/mtdblock6
misc$(PATSIZE) = 0x20000
misc$(FSTYPE) = fwfs
"""

# 2025 (1.6) spinand config: masks; _blkenv is ignored by the 2025 flow
CONFIG_2025 = CONFIG_2021 + """
boot$(OTAMASK) = 1 0
kernel$(OTAMASK) = 1 0
"""

# sdmmc: the boot files are files on the card
CONFIG_SDMMC = """
OTA_IMAGE_LIST = ipl ipl_cust uboot kernel rootfs
ipl$(OTABLK) = /boot/IPL
ipl$(PATSIZE) = 0x10000
ipl_cust$(OTABLK) = /boot/IPL_CUST
ipl_cust$(PATSIZE) = 0x10000
uboot$(OTABLK) = /boot/UBOOT
uboot$(PATSIZE) = 0x40000
kernel$(OTABLK) = /dev/mmcblk0p2
kernel$(PATSIZE) = 0x500000
rootfs$(OTABLK) = /dev/mmcblk0p3
rootfs$(PATSIZE) = 0x800000
rootfs$(FSTYPE) = ext4
"""

KERNEL_SIZE = 150005  # the example: 0x249f5
ENV_2021 = b"/etc/fw_setenv kernel_file_size 0x249f5\n/etc/fw_setenv  recovery_file_size 0x249f5\n"
ENV_2025 = b"/etc/fw_setenv kernel_file_size 249f5\n/etc/fw_setenv recovery_file_size  249f5\n"


def _bytes(n, seed):
    return bytes((i * 131 + seed * 17 + (i >> 9)) & 0xFF for i in range(n))


IMAGES_SPINAND = {"ipl_s.bin": 8192, "boot.bin": 20000, "kernel": KERNEL_SIZE, "rootfs.sqfs": 40000,
                  "customer.ubifs": 30000, "misc.fwfs": 5000}
IMAGES_SDMMC = {"boot/IPL": 4096, "boot/IPL_CUST": 2048, "boot/UBOOT": 9000, "kernel": KERNEL_SIZE,
                "rootfs.ext4": 30000}


def make_tree(tmp_path, config, flash="spinand", copy_mk=False, images=IMAGES_SPINAND):
    """project/{makefile,image/{makefile,configs/partitions.mk,output/images}}; ota.mk copied into
    image/ (the drop-in, no sibling file) or included from the repository."""
    root = tmp_path / "alkaid" / "project"
    image = root / "image"
    (image / "configs").mkdir(parents=True)
    (root / "makefile").write_text(PROJECT_MAKEFILE)
    if copy_mk:
        shutil.copy(OTA_MK, image / "ota.mk")
    (image / "makefile").write_text(IMAGE_MAKEFILE.format(flash=flash, ota_mk="ota.mk" if copy_mk else OTA_MK))
    (image / "configs" / "partitions.mk").write_text(config)
    out = image / "output" / "images"
    for i, (name, size) in enumerate(sorted(images.items())):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(_bytes(size, i))
    (tmp_path / "begin.sh").write_text("#!/bin/sh\necho begin\n")
    (tmp_path / "end.sh").write_text("#!/bin/sh\necho end ${OTA_STATUS}\n")
    return root, out


def run_make(root, stdin=None, path=None, **env):
    """make image-ota with our otapack first on PATH (path: the whole PATH instead)."""
    e = dict(os.environ, PATH=path or "%s:%s" % (BIN, os.environ["PATH"]))
    for k in ("SSTAROTA_FORMAT", "SSTAROTA_TOOL_ID", "OTA_FORMAT", "OTA_PARTS", "OTAPACK"):
        e.pop(k, None)
    e.update(env)
    return subprocess.run(["make", "-s", "-C", str(root), "image-ota"], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=e, preexec_fn=lambda: os.umask(0o022))


def env_script(tmp_path, content):
    """The env script as the vendor's shell redirection leaves it: mode 0644."""
    d = tmp_path / "expect"
    d.mkdir(exist_ok=True)
    p = d / "kernel_otaenv.sh"  # same basename: 1.6 stores it as the record's source name
    p.write_bytes(content)
    os.chmod(p, 0o644)
    return p


def expected_package(tmp_path, out, fmt, records, tool_id=None, begin=True):
    """otapack -c and one otapack -a per (image, targets, size, kind, mask, label) or script."""
    pkg = tmp_path / ("expected-%s.bin" % fmt)
    create = ["-c", pkg, "--format", fmt]
    if begin:
        create += ["-b", tmp_path / "begin.sh", "-e", tmp_path / "end.sh"]
    if tool_id:
        create += ["--tool-id", tool_id]
    otapack(*create)
    for r in records:
        if r[0] == "script":
            _, src, dst, label = r
            otapack("-s", src, "-d", dst, *(["-l", label] if label else []), "--script-add", "-a", pkg)
        elif fmt == "1.6":
            image, targets, size, kind, mask, label = r
            otapack("-s", out / image, "-d", targets, "-t", size, "--default-mask", mask, "-m", "0", kind,
                    "-l", label, "-a", pkg)
        else:
            image, targets, size, kind = r[:4]
            for t in targets.split():
                otapack("-s", out / image, "-d", t, "-t", size, "-m", "0", kind, "-a", pkg)
    return pkg.read_bytes()


def scripts_answers(tmp_path, *parts):
    return "%s\n%s\n%s\n" % (tmp_path / "begin.sh", tmp_path / "end.sh", "\n".join(parts))


# --------------------------------------------------------------------------- 2021 flow, 0.4


def test_2021_flow_interactive_and_non_interactive(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_2021, copy_mk=True)
    proc = run_make(root, scripts_answers(tmp_path, "yes", "y", "yes", "no", "yes", "yes"), OTA_FORMAT="0.4")
    assert proc.returncode == 0, proc.stderr
    for prompt in ("Start scripts:", "End scripts:", "Make ipl ?(yes/no)", "Make boot ?(yes/no)",
                   "Make kernel ?(yes/no)", "Make rootfs ?(yes/no)", "Make customer ?(yes/no)",
                   "Make misc ?(yes/no)"):
        assert prompt in proc.stdout
    # the env script: echo -e of the shell text, each line prefixed, by redirection (0644)
    env_sh = out / "kernel_otaenv.sh"
    assert env_sh.read_bytes() == ENV_2021
    assert stat.S_IMODE(env_sh.stat().st_mode) == 0o644
    expected = expected_package(tmp_path, out, "0.4", [
        ("ipl_s.bin", "/dev/mtdblock0", "0x60000", "--block-update"),
        ("boot.bin", "/dev/mtdblock1 /dev/mtdblock2", "0x40000", "--block-update"),
        ("kernel", "/dev/mtdblock3 /dev/mtdblock4", "0x500000", "--block-update"),
        ("script", env_script(tmp_path, ENV_2021), "kernel_otaenv.sh", None),
        ("customer.ubifs", "/dev/ubi0_0", "0x1000000", "--ubi-update"),
        ("misc.fwfs", "/dev/mtdblock6", "0x20000", "--block-update"),
    ])
    raw = made(out)
    assert raw == expected
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [(r.op_name, r.dst) for r in records] == [
        ("block", "/dev/mtdblock0"), ("block", "/dev/mtdblock1"), ("block", "/dev/mtdblock2"),
        ("block", "/dev/mtdblock3"), ("block", "/dev/mtdblock4"), ("script", "kernel_otaenv.sh"),
        ("ubi", "/dev/ubi0_0"), ("block", "/dev/mtdblock6")]
    assert records[5].mode == 0o100644 and all(r.mode == 0 for r in records if r.op_name != "script")
    assert [r.dst_size for r in records[:2]] == [0x60000, 0x40000]
    assert not (out / "SStarOtaLayout.txt").exists()

    # the same non-interactively; OTA_FORMAT unset is 0.4 when no SDK tool says otherwise
    (out / "SStarOta.bin.gz").unlink()
    proc = run_make(root, OTA_PARTS="ipl boot kernel customer misc", OTA_START_SCRIPT=str(tmp_path / "begin.sh"),
                    OTA_END_SCRIPT=str(tmp_path / "end.sh"))
    assert proc.returncode == 0, proc.stderr
    assert "?(yes/no)" not in proc.stdout
    assert made(out) == expected
    assert stat.S_IMODE((out / "kernel_otaenv.sh").stat().st_mode) == 0o644

    # and it installs
    inst = tmp_path / "root"
    inst.mkdir()
    r = subprocess.run([str(BIN / "otaunpack"), "-x", str(out / "SStarOta.bin.gz"), "--root", str(inst), "-q",
                        "--no-scripts"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (inst / "dev/mtdblock4").read_bytes() == (out / "kernel").read_bytes()
    assert (inst / "dev/ubi0_0").read_bytes() == (out / "customer.ubifs").read_bytes()


def test_2021_flow_sdmmc_boot_files(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_SDMMC, flash="sdmmc", images=IMAGES_SDMMC)
    proc = run_make(root, OTA_PARTS="all")
    assert proc.returncode == 0, proc.stderr
    expected = expected_package(tmp_path, out, "0.4", [
        ("boot/IPL", "/boot/IPL", "0x10000", "--file-update"),
        ("boot/IPL_CUST", "/boot/IPL_CUST", "0x10000", "--file-update"),
        ("boot/UBOOT", "/boot/UBOOT", "0x40000", "--file-update"),
        ("kernel", "/dev/mmcblk0p2", "0x500000", "--block-update"),
        ("rootfs.ext4", "/dev/mmcblk0p3", "0x800000", "--block-update"),
    ], begin=False)
    assert made(out) == expected
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [r.op_name for r in records] == ["file-update"] * 3 + ["block"] * 2


# --------------------------------------------------------------------------- 2025 flow, 1.6

RECORDS_2025 = [
    ("ipl_s.bin", "/dev/mtdblock0", "0x60000", "--block-update", "", "ipl"),
    ("boot.bin", "/dev/mtdblock1 /dev/mtdblock2", "0x40000", "--block-update", "1 0", "boot"),
    ("kernel", "/dev/mtdblock3 /dev/mtdblock4", "0x500000", "--block-update", "1 0", "kernel"),
    "ENV",
    ("customer.ubifs", "/dev/ubi0_0", "0x1000000", "--ubi-update", "", "customer"),
    ("misc.fwfs", "/dev/mtdblock6", "0x20000", "--block-update", "", "misc"),
]
LAYOUT_2025 = """\
0,ipl_s.bin,/dev/mtdblock0,0x1
1,boot.bin,/dev/mtdblock1,0x1
1,boot.bin,/dev/mtdblock2,0x0
2,kernel,/dev/mtdblock3,0x1
2,kernel,/dev/mtdblock4,0x0
3,kernel_otaenv.sh,kernel_otaenv.sh,0x1
4,customer.ubifs,/dev/ubi0_0,0x1
5,misc.fwfs,/dev/mtdblock6,0x1
"""


def records_2025(tmp_path):
    env = ("script", env_script(tmp_path, ENV_2025), "kernel_otaenv.sh", "kernel_otaenv.sh")
    return [env if r == "ENV" else r for r in RECORDS_2025]


def test_2025_flow_interactive_and_non_interactive(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_2025)
    answers = scripts_answers(tmp_path, "yes", "yes", "yes", "no", "yes", "y")
    proc = run_make(root, answers, OTA_FORMAT="1.6")
    assert proc.returncode == 0, proc.stderr
    assert "Make misc ?(yes/no)" in proc.stdout
    env_sh = out / "kernel_otaenv.sh"
    assert env_sh.read_bytes() == ENV_2025  # printf %x, two spaces in the second line; _blkenv unused
    assert stat.S_IMODE(env_sh.stat().st_mode) == 0o644
    assert made(out) == expected_package(tmp_path, out, "1.6", records_2025(tmp_path))
    assert (out / "SStarOtaLayout.txt").read_text() == LAYOUT_2025
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [r.label for r in records] == ["ipl", "boot", "kernel", "kernel_otaenv.sh", "customer", "misc"]
    assert records[1].masks[:2] == (1, 0) and records[3].mode == 0o100644

    # non-interactive, with the vendor's tool id: byte for byte the vendor's package
    (out / "SStarOta.bin.gz").unlink()
    proc = run_make(root, OTA_FORMAT="1.6", OTA_PARTS="ipl boot kernel customer misc",
                    OTA_START_SCRIPT=str(tmp_path / "begin.sh"), OTA_END_SCRIPT=str(tmp_path / "end.sh"),
                    OTA_TOOL_ID=VENDOR_TOOL_ID)
    assert proc.returncode == 0, proc.stderr
    assert made(out) == expected_package(tmp_path, out, "1.6", records_2025(tmp_path), tool_id=VENDOR_TOOL_ID)
    assert (out / "SStarOtaLayout.txt").read_text() == LAYOUT_2025


def test_2025_flow_kernel_env_script_even_without_the_kernel(tmp_path):
    """The vendor's 2025 rule writes kernel_otaenv.sh whatever the kernel answer: so do we, with a warning."""
    root, out = make_tree(tmp_path, CONFIG_2025)
    proc = run_make(root, OTA_FORMAT="1.6", OTA_PARTS="rootfs")
    assert proc.returncode == 0, proc.stderr
    assert "kernel is not packed, but kernel_otaenv.sh is" in proc.stderr
    env = ("script", env_script(tmp_path, ENV_2025), "kernel_otaenv.sh", "kernel_otaenv.sh")
    assert made(out) == expected_package(tmp_path, out, "1.6", [
        env, ("rootfs.sqfs", "/dev/mtdblock5", "0x800000", "--block-update", "", "rootfs")], begin=False)
    assert (out / "SStarOtaLayout.txt").read_text() == (
        "0,kernel_otaenv.sh,kernel_otaenv.sh,0x1\n1,rootfs.sqfs,/dev/mtdblock5,0x1\n")


def test_format_from_the_environment_variable(tmp_path):
    """SSTAROTA_FORMAT (the drop-in's variable) picks the flow when OTA_FORMAT is not given."""
    root, out = make_tree(tmp_path, CONFIG_2025)
    proc = run_make(root, OTA_PARTS="ipl", SSTAROTA_FORMAT="1.6")
    assert proc.returncode == 0, proc.stderr
    assert "(1.6)" in proc.stdout
    assert (out / "SStarOtaLayout.txt").read_text().splitlines() == [
        "0,ipl_s.bin,/dev/mtdblock0,0x1", "1,kernel_otaenv.sh,kernel_otaenv.sh,0x1"]


def test_2025_flow_sdmmc_has_no_kernel_env_script(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_SDMMC, flash="sdmmc", images=IMAGES_SDMMC)
    proc = run_make(root, OTA_FORMAT="1.6", OTA_PARTS="ipl kernel")
    assert proc.returncode == 0, proc.stderr
    assert made(out) == expected_package(tmp_path, out, "1.6", [
        ("boot/IPL", "/boot/IPL", "0x10000", "--file-update", "", "ipl"),
        ("kernel", "/dev/mmcblk0p2", "0x500000", "--block-update", "", "kernel")], begin=False)
    assert not (out / "kernel_otaenv.sh").exists()


def test_all_partitions_and_manifest(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_2021)
    proc = run_make(root, OTA_PARTS="all", OTA_MANIFEST="1")
    assert proc.returncode == 0, proc.stderr
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [r.dst for r in records][-2:] == ["/dev/mtdblock6", "sstarota-manifest.sh"]
    assert ("block", "/dev/mtdblock5") in [(r.op_name, r.dst) for r in records]  # rootfs (squashfs)


def test_signed_with_compatible_and_version(tmp_path):
    from sstarota import manifest, signing

    key = str(tmp_path / "sign.pem")
    signing.generate(key)
    root, out = make_tree(tmp_path, CONFIG_2021)
    proc = run_make(root, OTA_PARTS="all", OTA_SIGN_KEY=key, OTA_COMPATIBLE="cam-a cam-b", OTA_FW_VERSION="7")
    assert proc.returncode == 0, proc.stderr
    with gzip.open(str(out / "SStarOta.bin.gz")) as f:
        data = f.read()
    m = manifest.parse(data[data.rindex(manifest.MAGIC):])
    assert (m.compatible, m.version) == (("cam-a", "cam-b"), "7")
    assert m.signature.key_id == signing.key_id(signing.load_public(key + ".pub"))


@pytest.mark.parametrize("case,needle", [
    ("no-otablk", "partition 'extra' is in OTA_IMAGE_LIST but extra_otablk is not set"),
    ("no-rule", "partition 'extra' (fstype ''): the SDK flow has no image for it"),
    ("missing-image", "partition 'customer': image"),
    ("unknown-part", "OTA_PARTS names 'nope', which is not in OTA_IMAGE_LIST"),
    ("no-answers", "no answers on stdin"),
    ("bad-format", "OTA_FORMAT=2.0"),
    ("late-list", "include ota.mk after the partition config"),
])
def test_clear_errors(tmp_path, case, needle):
    config = CONFIG_2021
    if case in ("no-otablk", "no-rule"):
        config = config.replace("OTA_IMAGE_LIST = ", "OTA_IMAGE_LIST = extra ")
        if case == "no-rule":
            config += "extra$(OTABLK) = /dev/mtdblock9\nextra$(PATSIZE) = 0x1000\n"
    root, out = make_tree(tmp_path, config)
    if case == "late-list":  # the list set after ota.mk is included: its settings were never seen
        mk = root / "image" / "makefile"
        mk.write_text(mk.read_text() + "OTA_IMAGE_LIST += rootfs\n")
    if case == "missing-image":
        (out / "customer.ubifs").unlink()
    env = {"no-answers": {}, "unknown-part": {"OTA_PARTS": "nope"}, "bad-format": {"OTA_PARTS": "all",
                                                                                   "OTA_FORMAT": "2.0"}}
    proc = run_make(root, **env.get(case, {"OTA_PARTS": "all"}))
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert not (out / "SStarOta.bin.gz").exists() and not (out / "SStarOta.bin").exists()


# --------------------------------------------------------------------------- the binary drop-in

VENDOR_STYLE_MK = r"""
# a 2025-style ota.mk as the SDK ships it: plain `otapack -c`, the tool from makefiletools/bin
SHELL := /bin/bash
OTA := $(PROJ_ROOT)/image/makefiletools/bin/otapack
ota_images:
	@read -p "Start scripts:" s; $(OTA) -c $(IMAGEDIR)/SStarOta.bin
	@read -p "Make kernel ?(yes/no)" a; if [ "$$a" == yes ]; then $(OTA) -s $(IMAGEDIR)/kernel -d "$(kernel$(OTABLK))" -t $(kernel$(PATSIZE)) --default-mask "$(kernel$(OTAMASK))" -m 0 --block-update -l "kernel" -a $(IMAGEDIR)/SStarOta.bin; fi
	@echo -e "kernel_file_size $$(printf %x $$(stat -c "%s" $(IMAGEDIR)/kernel))" | sed 's/^/\/etc\/fw_setenv /g' > $(IMAGEDIR)/kernel_otaenv.sh
	@echo -e "recovery_file_size  $$(printf %x $$(stat -c "%s" $(IMAGEDIR)/kernel))" | sed 's/^/\/etc\/fw_setenv /g' >> $(IMAGEDIR)/kernel_otaenv.sh
	@$(OTA) -s $(IMAGEDIR)/kernel_otaenv.sh -d kernel_otaenv.sh -l kernel_otaenv.sh --script-add -a $(IMAGEDIR)/SStarOta.bin
	@$(OTA) --out-layout $(IMAGEDIR)/SStarOtaLayout.txt -r $(IMAGEDIR)/SStarOta.bin
	@gzip $(IMAGEDIR)/SStarOta.bin
"""


def path_without_otapack(tmp_path):
    """A PATH holding only the tools the make flows use (no otapack anywhere on it)."""
    d = tmp_path / "sysbin"
    d.mkdir()
    for tool in ("make", "sh", "bash", "sed", "grep", "head", "wc", "rm", "stat", "gzip", "printf", "cat"):
        os.symlink(shutil.which(tool), d / tool)
    return str(d)


def stand_in(root, banner):
    """makefiletools/bin/otapack as a script printing the vendor's --help banner (exit 0)."""
    tool = root / "image" / "makefiletools" / "bin" / "otapack"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho '%s'\necho 'Usage: otapack -c ...'\nexit 0\n" % banner)
    os.chmod(tool, 0o755)
    return tool


def generation(pkg):
    """0.4 or 1.6 from the version words (0.4: u32 0, 4 at offset 4; 1.6: u32 1, 6 at offset 32)."""
    raw = Path(pkg).read_bytes()
    if raw[32:40] == (1).to_bytes(4, "little") + (6).to_bytes(4, "little"):
        return "1.6"
    assert raw[4:12] == (0).to_bytes(4, "little") + (4).to_bytes(4, "little")
    return "0.4"


def run_cli(*argv, env=None):
    e = dict(os.environ)
    e.pop("SSTAROTA_FORMAT", None)
    e.pop("SSTAROTA_TOOL_ID", None)
    e.update(env or {})
    return subprocess.run([OTAPACK] + [str(a) for a in argv], capture_output=True, text=True, env=e)


def test_dropin_launcher_makes_the_vendor_1_6_package_and_undoes(tmp_path):
    root, out = make_tree(tmp_path, CONFIG_2025)
    (root / "image" / "ota.mk").write_text(VENDOR_STYLE_MK)
    (root / "image" / "makefile").write_text(IMAGE_MAKEFILE.format(flash="spinand", ota_mk="ota.mk"))
    tool = stand_in(root, BANNER_16)
    original, original_mode = tool.read_bytes(), tool.stat().st_mode

    sdk = root.parent
    proc = run_cli("--install-dropin", sdk)
    assert proc.returncode == 0, proc.stderr
    assert Path(str(tool) + ".vendor").read_bytes() == original
    assert run_cli("--install-dropin", sdk).returncode == 2  # once only

    # the SDK's own ota.mk, unchanged: plain `otapack -c` now writes 1.6 with the vendor's tool id
    proc = run_make(root, "\nyes\n", path=path_without_otapack(tmp_path))  # no otapack on PATH: the SDK's is the launcher
    assert proc.returncode == 0, proc.stderr
    raw = made(out)
    env = ("script", env_script(tmp_path, ENV_2025), "kernel_otaenv.sh", "kernel_otaenv.sh")
    assert raw == expected_package(tmp_path, out, "1.6", [
        ("kernel", "/dev/mtdblock3 /dev/mtdblock4", "0x500000", "--block-update", "1 0", "kernel"), env],
        tool_id=VENDOR_TOOL_ID, begin=False)
    package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert raw[64:128].rstrip(b"\0") == VENDOR_TOOL_ID.encode()
    assert (out / "SStarOtaLayout.txt").read_text().splitlines()[2] == "1,kernel_otaenv.sh,kernel_otaenv.sh,0x1"

    # our ota.mk in the same tree finds the launcher and takes its format and tool id
    (out / "SStarOta.bin.gz").unlink()
    (root / "image" / "makefile").write_text(IMAGE_MAKEFILE.format(flash="spinand", ota_mk=OTA_MK))
    proc = run_make(root, OTA_PARTS="kernel", path=str(tmp_path / "sysbin"))
    assert proc.returncode == 0, proc.stderr
    assert made(out) == raw

    # undo: the original file, byte for byte, mode too
    proc = run_cli("--uninstall-dropin", sdk)
    assert proc.returncode == 0, proc.stderr
    assert tool.read_bytes() == original and tool.stat().st_mode == original_mode
    assert not Path(str(tool) + ".vendor").exists()
    assert run_cli("--uninstall-dropin", sdk).returncode == 2  # nothing to undo


def test_dropin_for_a_0_4_tool_and_the_environment_variable(tmp_path):
    root = tmp_path / "sdk" / "project"
    tool = stand_in(root, BANNER_04)
    proc = run_cli("--install-dropin", root)  # the project/ directory works too
    assert proc.returncode == 0, proc.stderr
    pkg = tmp_path / "a.bin"
    assert subprocess.run([str(tool), "-c", pkg], capture_output=True).returncode == 0
    assert generation(pkg) == "0.4"
    # the launcher's default gives way to the variable, and the variable to --format
    proc = subprocess.run([str(tool), "-c", pkg], capture_output=True, env=dict(os.environ, SSTAROTA_FORMAT="1.6"))
    assert proc.returncode == 0 and generation(pkg) == "1.6"
    assert run_cli("-c", pkg, env={"SSTAROTA_FORMAT": "1.6", "SSTAROTA_TOOL_ID": "abc"}).returncode == 0
    assert generation(pkg) == "1.6" and pkg.read_bytes()[64:68] == b"abc\0"
    assert run_cli("-c", pkg, "--format", "0.4", env={"SSTAROTA_FORMAT": "1.6"}).returncode == 0
    assert generation(pkg) == "0.4"
    assert run_cli("-c", pkg, env={"SSTAROTA_FORMAT": "9"}).returncode == 2
    assert run_cli("--uninstall-dropin", root).returncode == 0
    assert tool.read_text().startswith("#!/bin/sh\necho 'Ota pack internal version 0.4")


def test_dropin_refuses_a_tool_without_the_banner(tmp_path):
    root = tmp_path / "sdk" / "project"
    tool = stand_in(root, "something else")
    before = tool.read_bytes()
    proc = run_cli("--install-dropin", tmp_path / "sdk")
    assert proc.returncode == 2 and "no 'Ota pack internal version X.Y' banner" in proc.stderr
    assert tool.read_bytes() == before and not Path(str(tool) + ".vendor").exists()


def test_our_ota_mk_beside_the_vendor_binary_matches_it(tmp_path):
    """The SDK keeps the vendor's 1.6 binary: our ota.mk uses otapack on PATH, in its format and tool id."""
    root, out = make_tree(tmp_path, CONFIG_2025, copy_mk=True)
    stand_in(root, BANNER_16)
    proc = run_make(root, OTA_PARTS="ipl boot kernel customer misc", OTA_START_SCRIPT=str(tmp_path / "begin.sh"),
                    OTA_END_SCRIPT=str(tmp_path / "end.sh"))
    assert proc.returncode == 0, proc.stderr
    assert made(out) == expected_package(tmp_path, out, "1.6", records_2025(tmp_path), tool_id=VENDOR_TOOL_ID)


# the 2021 SDK's ota.mk, reduced: one target per partition whose recipe ends in the _blkenv `if`
# (its status hides a failed append), and the system gzip last
VENDOR_2021_MK = r"""
SHELL := /bin/bash
OTA := $(PROJ_ROOT)/image/makefiletools/bin/otapack
define makeota
@read -p "Make $(1) ?(yes/no)" select; \
if [ "$${select}" == "yes" -o "$${select}" == "y" ]; then \
	$(foreach n,$(3),$(OTA) -s $(2) -d $(n) -t $(4) -m $(5) $(6) -a $(IMAGEDIR)/SStarOta.bin;) \
	if [ -n "$($(1)$(BLKENV))" ]; then echo blkenv; fi; \
fi;
endef
ota_images: ota_image_creat ipl_mkota kernel_mkota ota_image_compressed
ota_image_creat:
	@read -p "Start scripts:" s; read -p "End scripts:" e; $(OTA) -c $(IMAGEDIR)/SStarOta.bin
ipl_mkota:
	$(call makeota,ipl,$(IMAGEDIR)/boot/IPL,$(ipl$(OTABLK)),$(ipl$(PATSIZE)),0,--file-update)
kernel_mkota:
	$(call makeota,kernel,$(IMAGEDIR)/kernel,$(kernel$(OTABLK)),$(kernel$(PATSIZE)),0,--block-update)
ota_image_compressed:
	@gzip $(IMAGEDIR)/SStarOta.bin
"""

CONFIG_2021_SDMMC_NO_PATSIZE = """
OTA_IMAGE_LIST = ipl kernel
ipl$(OTABLK) = /boot/IPL
#ipl$(PATSIZE) = 0x10000
kernel$(OTABLK) = /dev/mmcblk0p2
kernel$(PATSIZE) = {kernel_size}
"""


@pytest.mark.parametrize("case", ["no-patsize", "refused"])
def test_dropin_under_the_2021_sdk_ota_mk(tmp_path, case):
    """An empty patsize packs as the vendor's getopt reads it; a refused append fails the build
    (the package is moved aside, so the SDK's gzip cannot ship it without the record)."""
    kernel_size = "0x500000" if case == "no-patsize" else "0x100"  # 'refused': the kernel is larger
    root, out = make_tree(tmp_path, CONFIG_2021_SDMMC_NO_PATSIZE.format(kernel_size=kernel_size), flash="sdmmc",
                          images=IMAGES_SDMMC)
    (root / "image" / "ota.mk").write_text(VENDOR_2021_MK)
    (root / "image" / "makefile").write_text(IMAGE_MAKEFILE.format(flash="sdmmc", ota_mk="ota.mk"))
    stand_in(root, BANNER_04)
    assert run_cli("--install-dropin", root.parent).returncode == 0
    proc = run_make(root, "\n\nyes\nyes\n", path=path_without_otapack(tmp_path))
    if case == "no-patsize":
        assert proc.returncode == 0, proc.stderr
        _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
        assert [(r.dst, r.dst_size, r.mode) for r in records] == [("/boot/IPL", 0xFFFFFFFF, 0),
                                                                  ("/dev/mmcblk0p2", 0x500000, 0)]
        assert proc.stderr.count("warning") == 1
    else:
        assert proc.returncode != 0
        assert not (out / "SStarOta.bin.gz").exists() and not (out / "SStarOta.bin").exists()
        assert (out / "SStarOta.bin.failed").is_file()


def test_the_launcher_finds_otapack_when_it_runs(tmp_path):
    """The launcher of a tree moved to another machine (its install-time otapack gone): PATH or
    SSTAROTA_OTAPACK; none of them: one line, exit 127, and never itself."""
    from sstarota import dropin

    bindir = tmp_path / "sdk" / "bin"
    bindir.mkdir(parents=True)
    launcher = bindir / "otapack"
    launcher.write_text(dropin.launcher_text("0.4", None, "0.4", None, "0" * 64, tmp_path / "sdk",
                                             str(tmp_path / "gone" / ".venv" / "bin" / "otapack")))
    os.chmod(launcher, 0o755)
    sysbin = path_without_otapack(tmp_path)
    pkg = tmp_path / "p.bin"

    def run_launcher(path, **env):
        e = dict(os.environ, PATH=path)
        for k in ("SSTAROTA_FORMAT", "SSTAROTA_TOOL_ID", "SSTAROTA_OTAPACK"):
            e.pop(k, None)
        e.update(env)
        return subprocess.run([str(launcher), "-c", str(pkg)], capture_output=True, text=True, env=e)

    proc = run_launcher("%s:%s:%s" % (bindir, BIN, sysbin))  # itself first on PATH: skipped
    assert proc.returncode == 0, proc.stderr
    assert generation(pkg) == "0.4"
    pkg.unlink()
    proc = run_launcher(sysbin, SSTAROTA_OTAPACK=OTAPACK)
    assert proc.returncode == 0, proc.stderr and pkg.exists()
    proc = run_launcher("%s:%s" % (bindir, sysbin))
    assert proc.returncode == 127
    assert len(proc.stderr.splitlines()) == 1 and "SSTAROTA_OTAPACK" in proc.stderr


@pytest.mark.parametrize("target", ["image-ota", "image-ota-incremental"])
def test_a_config_without_ota_image_list_packs_nothing_as_the_vendor_flow(tmp_path, target):
    root, out = make_tree(tmp_path, CONFIG_2021.replace("OTA_IMAGE_LIST = ", "# no OTA here: "))
    mk = root / "makefile"
    mk.write_text(mk.read_text() + "image-ota-incremental:\n\t$(MAKE) -C image image-ota-incremental\n")
    proc = run_make(root, OTA_PARTS="all", OTA_BASE=str(out)) if target == "image-ota" else subprocess.run(
        ["make", "-s", "-C", str(root), target, "OTA_BASE=%s" % out, "OTAPACK=%s" % OTAPACK], capture_output=True,
        text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1 and "note" in proc.stderr
    assert not (out / "SStarOta.bin.gz").exists() and not (out / "SStarOta.bin").exists()
