"""Real ALKAID partition configs (tests/sdk_configs/, sources in its README) through
`make image-ota` with our mk/ota.mk, in a tree shaped like the SDK's project/, whatever /bin/sh
is. The expected packages are packed here with struct from docs/FORMAT.md (tests/support/records.py)
from the vendor flow's documented commands: per partition of OTA_IMAGE_LIST (once, at its
first place), 2021 (0.4) `-s IMAGE -d TARGET -t PATSIZE -m 0 KIND` once per target, 2025 (1.6)
one record with every target, `--default-mask "<otamask>"`, `-l <part>`, and on spinand
kernel_otaenv.sh after the kernel. Sizes the configs compute with $(call ...) are worked out
here by hand from the resource files the test makes.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import OP_BLOCK, OP_SCRIPT, OP_UBI, TOOL_ID, made, pkg04, pkg16, rec04, rec16

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "sdk_configs"
OTA_MK = HERE.parent / "mk" / "ota.mk"
OTAPACK = str(Path(sys.executable).parent / "otapack")

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None,
                                reason="needs make and bash")

PROJECT_MAKEFILE = "image-ota:\n\t$(MAKE) -C image ota_images\n"
IMAGE_MAKEFILE = """\
PROJ_ROOT := {root}
IMAGEDIR := $(PROJ_ROOT)/image/output/images
OUTPUTDIR := $(PROJ_ROOT)/image/output
CHIP := chip
{defs}IPL_CONFIG := IPL.bin
IPL_CUST_CONFIG := IPL_CUST.bin
IPLX_CONFIG := IPLX.bin
UBOOT_BIN := u-boot.img.bin
include {helpers}
include configs/{config}
include {ota_mk}
"""


def data(n, seed):
    return bytes((i * 7 + seed * 31 + (i >> 8)) & 0xFF for i in range(n))


def project(tmp_path, config, images, resources=None, defs=""):
    """project/{makefile,image/{makefile,configs/,output/images/}} with images {name: size} and
    resource files {path under project/: size}; defs: make lines before the config (what the
    SDK's configs/current.configs holds from the defconfig); returns (project, images dir)."""
    root = tmp_path / "project"
    image = root / "image"
    (image / "configs").mkdir(parents=True)
    shutil.copy(CONFIGS / config, image / "configs" / config)
    (root / "makefile").write_text(PROJECT_MAKEFILE)
    (image / "makefile").write_text(IMAGE_MAKEFILE.format(root=root, helpers=CONFIGS / "helpers.mk",
                                                          config=config, ota_mk=OTA_MK, defs=defs))
    out = image / "output" / "images"
    out.mkdir(parents=True)
    for i, (name, size) in enumerate(images.items()):
        (out / name).write_bytes(data(size, i))
    for rel, size in (resources or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data(size, 99))
    return root, out


def make_image_ota(root, fmt):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHELL", "MAKEFLAGS", "MFLAGS", "SSTAROTA_FORMAT", "SSTAROTA_TOOL_ID", "DEBUG")}
    env.update(OTA_PARTS="all", OTA_FORMAT=fmt, OTA_TOOL_ID=TOOL_ID.decode(), OTAPACK=OTAPACK)
    return subprocess.run(["make", "-s", "-C", str(root), "image-ota"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o022))


def expected_16(out, parts, env_after=None):
    """1.6: one record per (part, image, targets, patsize, op); kernel_otaenv.sh after env_after."""
    records = []
    for part, image, targets, size, op in parts:
        records.append(rec16(targets, op, (out / image).read_bytes(), src=image.encode(), label=part.encode(),
                             dst_size=size))
        if part == env_after:
            n = (out / "kernel").stat().st_size
            script = b"/etc/fw_setenv kernel_file_size %x\n/etc/fw_setenv recovery_file_size  %x\n" % (n, n)
            assert (out / "kernel_otaenv.sh").read_bytes() == script
            records.append(rec16("kernel_otaenv.sh", OP_SCRIPT, script, src=b"kernel_otaenv.sh",
                                 label=b"kernel_otaenv.sh", dst_size=len(script), mode=0o100644))
    return pkg16(records)


def test_2025_nor_ab_with_call_computed_sizes(tmp_path):
    """SSC308QE nor.squashfs.ab: A/B boot and kernel, boot's size from $(call sum/alignup/max/filesize)."""
    images = {"boot.bin": 0x41000, "kernel": 150000, "misc.fwfs": 9000, "miservice.sqfs": 40000,
              "customer.jffs2": 30000}
    resources = {"board/chip/boot/nor/ipl/IPL.bin": 0x5432, "board/chip/boot/nor/ipl/IPL_CUST.bin": 0x1234,
                 "board/uboot/u-boot.img.bin": 0x2F005, "image/output/images/cis.bin": 0x3000}
    root, out = project(tmp_path, "ssc308qe-nor.squashfs.ab.partition.config", images, resources)
    proc = make_image_ota(root, "1.6")
    assert proc.returncode == 0, proc.stderr
    # ipl 0x6000 + ipl_cust 0x2000 + uboot 0x30000 + cis max(0x3000, 0xA000) = 0x42000, aligned to 0x10000
    assert made(out) == expected_16(out, [
        ("boot", "boot.bin", "/dev/mtd0 /dev/mtd1", 0x50000, OP_BLOCK),
        ("kernel", "kernel", "/dev/mtd4 /dev/mtd5", 0x300000, OP_BLOCK),
        ("misc", "misc.fwfs", "/dev/mtd7", 0xB0000, OP_BLOCK),
        ("miservice", "miservice.sqfs", "/dev/mtd8", 0x4D0000, OP_BLOCK),
        ("customer", "customer.jffs2", "/dev/mtd9", 0x500000, OP_BLOCK)])
    assert (out / "SStarOtaLayout.txt").read_text().splitlines()[:2] == ["0,boot.bin,/dev/mtd0,0x1",
                                                                         "0,boot.bin,/dev/mtd1,0x1"]


def test_2025_spinand_with_ifneq_and_the_kernel_env_script(tmp_path):
    """SSC308QE spinand.squashfs: sizes from $(call multiplyhex/sum), ifneq ($(DEBUG), ), ubifs
    volumes, and kernel_otaenv.sh after the kernel on spinand."""
    images = {"boot.bin": 0x100000, "kernel": 150005, "misc.fwfs": 5000, "miservice.ubifs": 30000,
              "customer.ubifs": 20000}
    root, out = project(tmp_path, "ssc308qe-spinand.squashfs.partition.config", images)
    proc = make_image_ota(root, "1.6")
    assert proc.returncode == 0, proc.stderr
    assert made(out) == expected_16(out, [
        ("boot", "boot.bin", "/dev/mtd0 /dev/mtd1", 0x1C0000, OP_BLOCK),
        ("kernel", "kernel", "/dev/mtd3 /dev/mtd4", 0x500000, OP_BLOCK),
        ("misc", "misc.fwfs", "/dev/mtd6", 0x100000, OP_BLOCK),
        ("miservice", "miservice.ubifs", "/dev/ubi0_0", 0x1400000, OP_UBI),
        ("customer", "customer.ubifs", "/dev/ubi0_1", 0x35C0000, OP_UBI)], env_after="kernel")


def test_2025_emmc(tmp_path):
    """SSC308QE emmc.ext4fs: boot's size from the IPLX and u-boot files, ext4 partitions, ifeq."""
    images = {"boot.bin": 0x21000, "kernel": 70000, "misc.fwfs": 3000, "miservice.ext4": 20000,
              "customer.ext4": 10000}
    resources = {"board/chip/boot/emmc/ipl/IPLX.bin": 0x1001, "board/uboot/u-boot.img.bin": 0x20003}
    root, out = project(tmp_path, "ssc308qe-emmc.ext4fs.partition.config", images, resources)
    proc = make_image_ota(root, "1.6")
    assert proc.returncode == 0, proc.stderr
    assert made(out) == expected_16(out, [
        ("boot", "boot.bin", "/dev/mmcblk0boot1", 0x21200, OP_BLOCK),  # 0x1001 + 0x20003 aligned to 0x200
        ("kernel", "kernel", "/dev/mmcblk0p1", 0xA00000, OP_BLOCK),
        ("misc", "misc.fwfs", "/dev/mmcblk0p3", 0xA00000, OP_BLOCK),
        ("miservice", "miservice.ext4", "/dev/mmcblk0p4", 0x12C00000, OP_BLOCK),
        ("customer", "customer.ext4", "/dev/mmcblk0p5", 0x82900000, OP_BLOCK)])


def test_2021_spinand_partition_listed_twice(tmp_path):
    """TAKOYAKI i2m spinand.ubifs.p2 (2021, 0.4): $(call multiplyhex) sizes, two targets for the
    boot partitions, and logo listed twice in OTA_IMAGE_LIST: packed once, at its first place."""
    images = {"ipl_s.bin": 0x8000, "ipl_cust_s.bin": 0x4000, "uboot_s.bin": 0x30000, "logo": 0x10000,
              "kernel": 150005, "miservice.ubifs": 30000, "customer.ubifs": 20000, "appconfigs.ubifs": 10000}
    root, out = project(tmp_path, "takoyaki-i2m-spinand.ubifs.p2.partition.config", images)
    proc = make_image_ota(root, "0.4")
    assert proc.returncode == 0, proc.stderr
    records = []
    for image, targets, size, op in [
            ("ipl_s.bin", "/dev/mtdblock0 /dev/mtdblock1", 0x60000, OP_BLOCK),
            ("ipl_cust_s.bin", "/dev/mtdblock2 /dev/mtdblock3", 0x60000, OP_BLOCK),
            ("uboot_s.bin", "/dev/mtdblock4 /dev/mtdblock5", 0xC0000, OP_BLOCK),
            ("logo", "/dev/mtdblock7", 0x60000, OP_BLOCK), ("kernel", "/dev/mtdblock8", 0x500000, OP_BLOCK),
            ("miservice.ubifs", "/dev/ubi0_1", 0xA00000, OP_UBI), ("customer.ubifs", "/dev/ubi0_2", 0x5100000, OP_UBI),
            ("appconfigs.ubifs", "/dev/ubi0_3", 0x500000, OP_UBI)]:
        records += [rec04(t, op, (out / image).read_bytes(), dst_size=size) for t in targets.split()]
    assert made(out) == pkg04(records)
    assert [line for line in proc.stderr.splitlines() if "warning" in line] == [
        "ota_images: warning: OTA_IMAGE_LIST names logo more than once: packed once, at the first place "
        "(as the SDK's flow does)"]


@pytest.mark.parametrize("onebin,boot_targets,boot_size", [
    ("nor", "/dev/mtdblock0", 0x5E000),
    # ipl 3 x 0x20000 + ipl_cust 3 x 0x20000 + uboot 0x60000 + 4 x 0x20000
    ("spinand", "/dev/mtd0 /dev/mtd1", 0x1A0000)])
def test_2021_emmc_with_the_boot_flash_chosen_by_onebin_boot_flash_type(tmp_path, onebin, boot_targets, boot_size):
    """ssd_lcd p3 emmc.ext4fs (2021, 0.4): Linux on eMMC, boot.bin on the NOR or SPI-NAND that
    ONEBIN_BOOT_FLASH_TYPE names (the defconfig's CONFIG_ONEBIN_BOOT_FLASH_TYPE, through
    current.configs): one target or two, boot's size fixed or summed; rootfs is not in
    OTA_IMAGE_LIST; ext4 and fwfs partitions as block records."""
    images = {"boot.bin": 0x40000, "kernel": 90000, "misc.fwfs": 7000, "miservice.ext4": 20000,
              "customer.ext4": 30000, "appconfigs.ext4": 5000, "rootfs.ext4": 4000}
    resources = {"board/chip/boot/nor/ipl/IPL.bin": 0x3001, "board/chip/boot/nor/ipl/IPL_CUST.bin": 0x1001}
    root, out = project(tmp_path, "ssd_lcd-p3-emmc.ext4fs.partition.config", images, resources,
                        defs="ONEBIN_BOOT_FLASH_TYPE = %s\n" % onebin)
    proc = make_image_ota(root, "0.4")
    assert proc.returncode == 0, proc.stderr
    records = []
    for image, targets, size in [("boot.bin", boot_targets, boot_size), ("kernel", "/dev/mmcblk0p1", 0xA00000),
                                 ("misc.fwfs", "/dev/mmcblk0p3", 0x1400000),
                                 ("miservice.ext4", "/dev/mmcblk0p4", 0x11800000),
                                 ("customer.ext4", "/dev/mmcblk0p5", 0x83300000),
                                 ("appconfigs.ext4", "/dev/mmcblk0p6", 0xA00000)]:
        records += [rec04(t, OP_BLOCK, (out / image).read_bytes(), dst_size=size) for t in targets.split()]
    assert made(out) == pkg04(records)


@pytest.mark.parametrize("config,fmt", [("ssc308qe-sdmmc.ext4fs.partition.config", "1.6"),
                                        ("ssd_lcd-p3-sdmmc.ext4fs.partition.config", "0.4")])
def test_sdmmc_configs_without_ota_image_list_pack_nothing(tmp_path, config, fmt):
    root, out = project(tmp_path, config, {"kernel": 1000})
    proc = make_image_ota(root, fmt)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "SStarOta.bin.gz").exists() and not (out / "SStarOta.bin").exists()


def test_2025_nor_ab_incremental(tmp_path):
    """make image-ota-incremental on the same real config: computed sizes reach otapack."""
    images = {"boot.bin": 0x41000, "kernel": 150000, "misc.fwfs": 9000, "miservice.sqfs": 40000,
              "customer.jffs2": 30000}
    resources = {"board/chip/boot/nor/ipl/IPL.bin": 0x5432, "board/chip/boot/nor/ipl/IPL_CUST.bin": 0x1234,
                 "board/uboot/u-boot.img.bin": 0x2F005, "image/output/images/cis.bin": 0x3000}
    root, out = project(tmp_path, "ssc308qe-nor.squashfs.ab.partition.config", images, resources)
    base = tmp_path / "base"
    shutil.copytree(out, base)
    kernel = bytearray((out / "kernel").read_bytes())
    kernel[1000:1004] = b"NEW!"
    (out / "kernel").write_bytes(bytes(kernel))
    (root / "makefile").write_text(PROJECT_MAKEFILE + "image-ota-incremental:\n\t$(MAKE) -C image "
                                   "image-ota-incremental OTA_BASE=$(OTA_BASE)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SHELL", "MAKEFLAGS", "MFLAGS", "SSTAROTA_FORMAT")}
    env.update(OTA_FORMAT="1.6", OTAPACK=OTAPACK, OTA_BASE=str(base))
    proc = subprocess.run(["make", "-s", "-C", str(root), "image-ota-incremental"], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in (out / "SStarOtaIncremental.txt").read_text().splitlines()[1:6]]
    assert [(r[0], r[2]) for r in rows] == [("boot", "same"), ("kernel", "delta"), ("misc", "same"),
                                            ("miservice", "same"), ("customer", "same")]
