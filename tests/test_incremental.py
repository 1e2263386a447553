"""otapack --incremental OLD NEW: two ALKAID-shaped image sets (a raw kernel with a few bytes
changed, a squashfs made twice from slightly different trees, an unchanged partition, a logo
whose delta does not pay, a ubifs image), the choices and the report, an install onto a root
holding the old images, and a root holding other images refused before any write."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sstarota.packer import incremental

from support import otapack, otaunpack, snapshot

from bench_incremental import CONFIG, image_set  # scripts/: the image sets the benchmark measures

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs")

PARTS = {"kernel": ("kernel", "dev/mtdblock3", 0x100000), "rootfs": ("rootfs.sqfs", "dev/mtdblock4", 0x200000),
         "logo": ("logo", "dev/mtdblock2", 0x40000), "misc": ("misc.fwfs", "dev/mtdblock6", 0x20000),
         "customer": ("customer.ubifs", "dev/ubi0_0", None)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("inc")
    (base / "partitions.mk").write_text(CONFIG)
    return image_set(base / "old" / "images", 1), image_set(base / "new" / "images", 2), base / "partitions.mk"


@pytest.fixture(scope="module")
def built(sets, tmp_path_factory):
    old, new, config = sets
    out = tmp_path_factory.mktemp("out") / "SStarOta.bin"
    proc = otapack("-c", out, "--incremental", old, new, "--config", config, "--json", check=False)
    assert proc.returncode == 0, proc.stderr
    return out.with_suffix(".bin.gz"), json.loads(proc.stdout)


def seeded_root(tmp_path, images):
    """A staging root whose partitions hold images (raw ones padded with 0xff)."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    for name, (image, target, size) in PARTS.items():
        data = (images / image).read_bytes()
        (root / target).write_bytes(data + b"\xff" * (size - len(data)) if size else data)
    return root


def test_the_choices_and_the_report(sets, built):
    old, new, _ = sets
    pkg, report = built
    choice = {c["partition"]: c for c in report["partitions"]}
    assert {n: c["choice"] for n, c in choice.items()} == {
        "kernel": "delta", "rootfs": "delta", "logo": "full", "misc": "same", "customer": "full"}
    assert choice["kernel"]["patch"] < 0.05 * choice["kernel"]["new"]
    assert choice["rootfs"]["patch"] < 0.95 * choice["rootfs"]["new"]
    assert choice["logo"]["patch"] >= 0.95 * choice["logo"]["new"] and "threshold" in choice["logo"]["reason"]
    assert choice["customer"]["patch"] is None and "ubifs" in choice["customer"]["reason"]
    assert choice["misc"]["packed"] == 0
    assert choice["customer"]["packed"] == (new / "customer.ubifs").stat().st_size
    assert report["package_gz"] == pkg.stat().st_size and not pkg.with_suffix("").exists()
    assert report["package_gz"] < report["full_gz"]
    assert report["package_raw"] < report["full_raw"]


def test_the_text_report(sets, tmp_path):
    old, new, config = sets
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", config, "-j", "1", check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:7] == ["partition", "fstype", "choice", "old", "new", "patch", "packed"]
    assert [line.split()[:3] for line in lines[1:6]] == [["kernel", "raw", "delta"], ["rootfs", "squashfs", "delta"],
                                                   ["logo", "raw", "full"], ["misc", "fwfs", "same"],
                                                   ["customer", "ubifs", "full"]]
    assert lines[6].startswith("package %s.gz: " % (tmp_path / "p.bin")) and "the full package" in lines[6]


def test_installs_onto_the_old_images_and_gives_the_new_ones(sets, built, tmp_path):
    old, new, _ = sets
    pkg, _ = built
    root = seeded_root(tmp_path, old)
    proc = otaunpack("-x", pkg, "--root", root, "-t", tmp_path, "-q")
    assert proc.returncode == 0, proc.stderr
    for name, (image, target, size) in PARTS.items():
        data = (new / image).read_bytes()
        assert (root / target).read_bytes()[:len(data)] == data, name
    assert (root / "dev/ubi0_0").read_bytes() == (new / "customer.ubifs").read_bytes()


def test_a_root_holding_other_images_is_refused_before_any_write(sets, built, tmp_path):
    old, new, _ = sets
    pkg, _ = built
    root = seeded_root(tmp_path, old)
    kernel = bytearray((root / "dev/mtdblock3").read_bytes())
    kernel[5] ^= 0xFF  # another base: one byte differs
    (root / "dev/mtdblock3").write_bytes(bytes(kernel))
    before = snapshot(root)
    proc = otaunpack("-x", pkg, "--root", root, "-t", tmp_path, "-q")
    assert proc.returncode == 3
    assert "not the content the delta was made from" in proc.stderr
    assert snapshot(root) == before


def test_config_parsing_and_usage_errors(sets, tmp_path):
    old, new, config = sets
    parts = incremental.read_config(config)
    assert [(p.name, p.targets, p.size, p.fstype, p.image) for p in parts][:2] == [
        ("kernel", ["/dev/mtdblock3"], 0x100000, "", "kernel"),
        ("rootfs", ["/dev/mtdblock4"], 0x200000, "squashfs", "rootfs.sqfs")]
    proc = otapack("--incremental", old, new, "--config", config, check=False)
    assert proc.returncode == 2 and "goes with -c PKG and --config" in proc.stderr
    proc = otapack("-c", tmp_path / "p.bin", "-a", tmp_path / "q.bin", "--incremental", old, new, "--config", config,
                   check=False)
    assert proc.returncode == 2 and "no other action goes with it" in proc.stderr
    bad = tmp_path / "bad.mk"
    bad.write_text("OTA_IMAGE_LIST = kernel\nkernel_patsize = 0x1000\n")
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", bad, check=False)
    assert proc.returncode == 2 and "kernel_otablk is not set" in proc.stderr
    small = tmp_path / "small.mk"
    small.write_text("OTA_IMAGE_LIST = kernel\nkernel_otablk = /dev/mtdblock3\nkernel_patsize = 0x1000\n")
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", small, check=False)
    assert proc.returncode == 2 and "larger than the partition" in proc.stderr
    assert not os.path.exists(tmp_path / "p.bin.gz")


def image_dir(where, config_text, images, settings=""):
    """An ALKAID-shaped project/image: its makefile (suffixes, settings, the config, mk/ota.mk)
    and output/images holding a copy of images."""
    image = where / "image"
    (image / "configs").mkdir(parents=True)
    (image / "configs" / "partitions.mk").write_text(config_text)
    shutil.copytree(images, image / "output" / "images")
    ota_mk = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mk", "ota.mk")
    (image / "makefile").write_text("OTABLK := _otablk\nPATSIZE := _patsize\nFSTYPE := _fstype\n%s"
                                    "IMAGEDIR := $(CURDIR)/output/images\ninclude configs/partitions.mk\n"
                                    "include %s\n" % (settings, ota_mk))
    return image


def make_in(image, *args):
    otapack_bin = os.path.join(os.path.dirname(sys.executable), "otapack")
    return subprocess.run(["make", "-s", "-C", str(image), "OTAPACK=%s" % otapack_bin] + list(args),
                          capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
def test_make_image_ota_incremental(sets, built, tmp_path):
    """mk/ota.mk's target in an ALKAID-shaped image directory gives the package otapack does."""
    old, new, config = sets
    image = image_dir(tmp_path / "project", config.read_text(), new)
    proc = make_in(image, "image-ota-incremental", "OTA_BASE=%s" % old)
    assert proc.returncode == 0, proc.stderr
    out = image / "output" / "images"
    assert (out / "SStarOta.bin.gz").read_bytes() == built[0].read_bytes()
    table = (out / "SStarOtaIncremental.txt").read_text().splitlines()
    assert [line.split()[2] for line in table[1:6]] == ["delta", "delta", "full", "same", "full"]
    assert proc.stdout.strip().endswith("(0.4, incremental from %s)" % old)
    assert not (out / "SStarOta.bin").exists() and not (out / "SStarOtaPartitions.mk").exists()
    proc = make_in(image, "ota_images_incremental")
    assert proc.returncode == 2 and "set OTA_BASE=" in proc.stderr


def test_format_1_6_one_record_per_partition_installs(sets, tmp_path):
    old, new, config = sets
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", config, "--format", "1.6", "-k",
                   "--json", check=False)
    assert proc.returncode == 0, proc.stderr
    info = otapack("--info", tmp_path / "p.bin", "--json", check=False)
    records = json.loads(info.stdout)["records"]
    assert [(r["op"], r["label"]) for r in records][:4] == [
        ("file-diff", "kernel"), ("file-diff", "rootfs"), ("block", "logo"), ("ubi", "customer")]
    root = seeded_root(tmp_path, old)
    proc = otaunpack("-x", tmp_path / "p.bin.gz", "--root", root, "-t", tmp_path, "-q")
    assert proc.returncode == 0, proc.stderr
    for name, (image, target, size) in PARTS.items():
        data = (new / image).read_bytes()
        assert (root / target).read_bytes()[:len(data)] == data, name


def test_a_partitions_env_script_follows_it_when_it_is_packed(sets, tmp_path):
    old, new, config = sets
    env = tmp_path / "kernel_otaenv.sh"
    env.write_text("/etc/fw_setenv kernel_file_size 0xaae60\n")
    cfg = tmp_path / "p.mk"
    cfg.write_text(config.read_text() + "kernel_otaenv = %s\nmisc_otaenv = %s\n" % (env, env))
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", cfg, "-k", "--json", check=False)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(otapack("--info", tmp_path / "p.bin", "--json", check=False).stdout)["records"]
    assert [(r["op"], r["targets"][0]) for r in records][:3] == [
        ("file-diff", "/dev/mtdblock3"), ("script", "kernel_otaenv.sh"), ("file-diff", "/dev/mtdblock4")]
    assert [r for r in records if r["op"] == "script"][1]["targets"] == ["sstarota-manifest.sh"]  # misc: same


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
@pytest.mark.parametrize("fmt", ["0.4", "1.6"])
def test_make_adds_the_env_scripts_of_packed_partitions(sets, tmp_path, fmt):
    """0.4: <part>_blkenv's fw_setenv script after the partition; 1.6 on spinand: kernel_otaenv.sh."""
    old, new, config = sets
    blkenv = "kernel$(BLKENV) = kernel_file_size $$(printf 0x%x $$(wc -c < $(IMAGEDIR)/kernel))\n"
    image = image_dir(tmp_path, config.read_text() + blkenv, new, "BLKENV := _blkenv\nFLASH_TYPE := spinand\n")
    proc = make_in(image, "image-ota-incremental", "OTA_BASE=%s" % old, "OTA_FORMAT=" + fmt)
    assert proc.returncode == 0, proc.stderr
    out = image / "output" / "images"
    records = json.loads(otapack("--info", out / "SStarOta.bin.gz", "--json", check=False).stdout)["records"]
    assert [(r["op"], r["targets"][0]) for r in records][:2] == [("file-diff", "/dev/mtdblock3"),
                                                                ("script", "kernel_otaenv.sh")]
    text = (out / "kernel_otaenv.sh").read_text()
    if fmt == "0.4":
        assert text == "/etc/fw_setenv kernel_file_size 0xaae60\n"
    else:
        assert text == "/etc/fw_setenv kernel_file_size aae60\n/etc/fw_setenv recovery_file_size  aae60\n"


def _signature(pkg, pub):
    proc = otapack("--info", pkg, "--key", pub, "--json", check=False)
    data = json.loads(proc.stdout)
    return proc.returncode, data["signature"], data["manifest"]["version"], data["manifest"]["compatible"]


def test_signed_and_versioned(sets, tmp_path):
    from sstarota import signing

    old, new, config = sets
    key = str(tmp_path / "release.pem")
    signing.generate(key)
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", config, "--sign", key,
                   "--fw-version", "7.1", "--compatible", "cam-a cam-b", "-j", "1", check=False)
    assert proc.returncode == 0, proc.stderr
    assert _signature(tmp_path / "p.bin.gz", key + ".pub") == (0, "good", "7.1", ["cam-a", "cam-b"])
    proc = otapack("-c", tmp_path / "q.bin", "--incremental", old, new, "--config", config, "--fw-version", "7.2",
                   check=False)
    assert proc.returncode == 0, proc.stderr
    assert _signature(tmp_path / "q.bin.gz", key + ".pub") == (2, "unsigned", "7.2", [])
    proc = otapack("-c", tmp_path / "r.bin", "--incremental", old, new, "--config", config, "--sign",
                   tmp_path / "missing.pem", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not (tmp_path / "r.bin.gz").exists()


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
def test_make_image_ota_incremental_signed(sets, tmp_path):
    from sstarota import signing

    old, new, config = sets
    key = str(tmp_path / "release.pem")
    signing.generate(key)
    image = image_dir(tmp_path / "project", config.read_text(), new)
    proc = make_in(image, "image-ota-incremental", "OTA_BASE=%s" % old, "OTA_SIGN_KEY=%s" % key, "OTA_FW_VERSION=3",
                "OTA_COMPATIBLE=cam-a")
    assert proc.returncode == 0, proc.stderr
    assert _signature(image / "output/images/SStarOta.bin.gz", key + ".pub") == (0, "good", "3", ["cam-a"])


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
def test_make_image_ota_incremental_quotes_ota_base(sets, built, tmp_path):
    """OTA_BASE reaches the shell as data: quotes, $, ; and spaces in it run nothing."""
    old, new, config = sets
    odd = tmp_path / 'v1 "q" $x `touch TICK` ;touch PWNED; \'s'
    shutil.copytree(old, odd)
    image = image_dir(tmp_path / "project", config.read_text(), new)
    proc = make_in(image, "image-ota-incremental", "OTA_BASE=%s" % odd)
    assert proc.returncode == 0, proc.stderr
    assert (image / "output/images/SStarOta.bin.gz").read_bytes() == built[0].read_bytes()
    assert not [p for p in tmp_path.rglob("*") if p.name in ("PWNED", "TICK")]
    assert not (image / "PWNED").exists() and not (image / "TICK").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_config_is_read_as_make_reads_it(tmp_path):
    """ifeq/else/endif, include and make functions: the values make gives them."""
    (tmp_path / "common.mk").write_text("DEVS := /dev/mtdblock2 /dev/mtdblock5\nrootfs$(FSTYPE) = squashfs\n")
    cfg = tmp_path / "partitions.mk"
    cfg.write_text("include common.mk\n"
                   "OTA_IMAGE_LIST = kernel rootfs\n"
                   "ifeq ($(FLASH_TYPE),nor)\n"
                   "kernel$(OTABLK) = /dev/mtdblock1\n"
                   "else\n"
                   "kernel$(OTABLK) = /dev/mtdblock3\n"
                   "endif\n"
                   "ifneq ($(FLASH_TYPE),nor)\n"
                   "else\n"
                   "kernel$(OTABLK) = /dev/mtdblock1\n"
                   "endif\n"
                   "kernel$(PATSIZE) = $(shell printf 0x%x 1048576)\n"
                   "rootfs$(OTABLK) = $(word 2,$(DEVS))\n"
                   "rootfs$(PATSIZE) = 0x$(subst k,000,20k)\n")
    parts = incremental.read_config(str(cfg))
    assert [(p.name, p.targets, p.size, p.fstype, p.image) for p in parts] == [
        ("kernel", ["/dev/mtdblock3"], 0x100000, "", "kernel"),
        ("rootfs", ["/dev/mtdblock5"], 0x20000, "squashfs", "rootfs.sqfs")]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_config_make_cannot_read_is_one_line(tmp_path, sets):
    old, new, _ = sets
    cfg = tmp_path / "partitions.mk"
    cfg.write_text("OTA_IMAGE_LIST = kernel\nifeq (a,b)\nkernel_otablk = /dev/mtdblock3\n")  # no endif
    proc = otapack("-c", tmp_path / "p.bin", "--incremental", old, new, "--config", cfg, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert str(cfg) in proc.stderr and not (tmp_path / "p.bin.gz").exists()


def test_without_make_only_plain_assignments_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(incremental.shutil, "which", lambda name: None)
    cfg = tmp_path / "partitions.mk"
    cfg.write_text("OTA_IMAGE_LIST = kernel\nkernel$(OTABLK) = /dev/mtdblock3\nkernel$(PATSIZE) = 0x1000\n")
    assert [(p.name, p.targets, p.size) for p in incremental.read_config(str(cfg))] == [
        ("kernel", ["/dev/mtdblock3"], 0x1000)]
    for text in ("ifeq (a,b)\nendif\n", "include other.mk\n", "X = $(word 1,a b)\n"):
        cfg.write_text("OTA_IMAGE_LIST = kernel\n" + text)
        with pytest.raises(incremental.InputError, match="needs make"):
            incremental.read_config(str(cfg))


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
def test_bash_arithmetic_sizes_and_zero_sizes(tmp_path):
    cfg = tmp_path / "partitions.mk"
    cfg.write_text("OTA_IMAGE_LIST = kernel\nkernel$(OTABLK) = /dev/mtdblock3\n"
                   "kernel$(PATSIZE) = $(shell printf 0x%x $$[3*0x1000])\n")
    assert [p.size for p in incremental.read_config(str(cfg))] == [0x3000]
    cfg.write_text("OTA_IMAGE_LIST = kernel\nkernel$(OTABLK) = /dev/mtdblock3\nkernel$(PATSIZE) = 0x0\n")
    with pytest.raises(incremental.InputError, match="kernel_patsize"):
        incremental.read_config(str(cfg))


def test_a_partition_listed_twice_is_read_once(tmp_path):
    cfg = tmp_path / "partitions.mk"
    cfg.write_text("OTA_IMAGE_LIST = logo kernel logo\nkernel_otablk = /dev/mtdblock3\nkernel_patsize = 0x1000\n"
                   "logo_otablk = /dev/mtdblock2\nlogo_patsize = 0x1000\n")
    assert [p.name for p in incremental.read_config(str(cfg))] == ["logo", "kernel"]
