"""otaunpack on its real architecture: the armhf board (Cortex-A7, 64 MB of RAM, Debian's
armhf Python), run from the board bundle, against nandsim (a factory bad block), UBI and
a virtio disk standing for an eMMC partition. Packages are made on the host by otapack."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from support import ARM_OTAUNPACK as OTAUNPACK, ARM_TMP as TMP, block_package, mtd_summary, nand_sha, otapack, sha

pytestmark = [pytest.mark.board_arm, pytest.mark.xdist_group("board_arm")]  # one booted board: one worker

#: the armhf numbers of <mtd/mtd-abi.h>, <linux/fs.h> (size_t: 4 bytes), <mtd/ubi-user.h>
ARMHF_IOCTLS = {"MEMERASE": 0x40084D02, "MEMERASE64": 0x40104D14, "MEMGETBADBLOCK": 0x40084D0B,
                "MEMSETBADBLOCK": 0x40084D0C, "BLKGETSIZE64": 0x80041272, "UBI_IOCVOLUP": 0x40084F00}
EB = 128 << 10  # the NAND's erase block

BIN = Path(sys.executable).parent


def test_the_bundle_runs_on_the_boards_own_python(arm_board):
    assert arm_board.sh("uname -m").strip() == "armv7l"
    assert arm_board.sh("grep -c MemTotal /proc/meminfo && python3 -c 'import struct; print(struct.calcsize(\"@N\"))'"
                        ).split() == ["1", "4"]
    r = arm_board.otaunpack("--help")
    assert r.rc == 0 and "Exit codes" in r.out
    r = arm_board.otaunpack("--no-such-flag")
    assert r.rc == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err
    r = arm_board.otaunpack("-x", "/nonexistent.bin.gz", "-t", TMP)
    assert r.rc == 2 and r.err.startswith("otaunpack: error:"), r.err
    # the installer comes from the bundle; neither construct (the layouts are compiled into
    # layout_table.py) nor click is on the board
    out = arm_board.sh("python3 -c \"import sys; sys.path.insert(0, '%s'); import sstarota.cli.otaunpack; "
                       "print(sstarota.__file__); import construct\"; echo rc=$?; python3 -c 'import click'; echo rc=$?"
                       % OTAUNPACK)
    lines = out.split()
    assert lines[0].startswith(OTAUNPACK + "/sstarota/") and lines[-2:] == ["rc=1", "rc=1"], out


def test_ioctl_numbers_on_armhf_and_blkgetsize64_on_the_virtio_disk(arm_board):
    out = arm_board.sh("python3 -c \"import sys, json; sys.path.insert(0, '%s'); from sstarota import flash; "
                       "print(json.dumps({n: getattr(flash, n) for n in %r})); print(flash.block_device_size('%s'))\""
                       % (OTAUNPACK, sorted(ARMHF_IOCTLS), arm_board.emmc))
    numbers, size = out.splitlines()
    assert json.loads(numbers) == ARMHF_IOCTLS
    assert int(size) == 8 << 20


def test_block_update_to_the_virtio_disk(arm_board):
    """A plain block device (eMMC/SD partition): its size comes from BLKGETSIZE64, which had
    the 64-bit number and failed on armhf with ENOTTY."""
    d = arm_board.fresh("emmc")
    image = d / "boot.img"
    image.write_bytes(os.urandom((1 << 20) + 777))
    r = arm_board.otaunpack("-r", arm_board.path(block_package(d, image, arm_board.emmc)), "-q", "-t", TMP)
    assert r.rc == 0, r.err
    got = arm_board.sh("head -c %d %s | sha256sum" % (image.stat().st_size, arm_board.emmc)).split()[0]
    assert got == sha(image.read_bytes())
    big = d / "big.img"
    with open(big, "wb") as f:
        f.truncate((8 << 20) + 1)
    r = arm_board.otaunpack("-r", arm_board.path(block_package(d, big, arm_board.emmc, "big.bin")), "-q", "-t", TMP)
    assert r.rc == 3 and "larger than %s can hold (8388608 bytes" % arm_board.emmc in r.err, r.err


def test_nand_block_update_skips_the_bad_block_the_rerun_writes_nothing_a_corrupt_package_is_rejected(arm_board):
    d = arm_board.fresh("nand")
    size = 7 * EB + 5000  # 8 erase blocks from block 0: crosses the factory bad block 5
    image = d / "image.bin"
    image.write_bytes(os.urandom(size))
    arm_board.sh("flash_erase -q /dev/mtd0 0 0")
    pkg = block_package(d, image, "/dev/mtd0")
    r = arm_board.otaunpack("-r", arm_board.path(pkg), "-q", "-t", TMP)
    assert r.rc == 0, r.err
    assert mtd_summary(r.err, 0) == (8, 0, 1, 0)
    assert nand_sha(arm_board, 0, size, TMP) == sha(image.read_bytes())
    r = arm_board.otaunpack("-r", arm_board.path(pkg), "-q", "-t", TMP)  # in place: nothing erased or written
    assert r.rc == 0 and "summary: 1 record(s): 0 written, 1 already in place" in r.err, r.err
    assert "written: 0 file(s), 0 flash erase block(s), 0 UBI volume(s)" in r.err, r.err
    # one flipped byte in the image data (gzip, as boards get packages): rejected whole
    other = d / "other.bin"
    other.write_bytes(os.urandom(size))
    begin = d / "begin.sh"
    begin.write_text("touch %s/begin-ran\n" % TMP)
    bad = block_package(d, other, "/dev/mtd0", "bad.bin", begin=begin)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    otapack("--gzip", bad)
    r = arm_board.otaunpack("-x", arm_board.path(d / "bad.bin.gz"), "-q", "-t", TMP)
    assert r.rc == 3 and "checksum" in r.err, r.err
    assert arm_board.run("test -e %s/begin-ran" % TMP).rc != 0
    assert nand_sha(arm_board, 0, size, TMP) == sha(image.read_bytes())


def test_ubi_files_deltas_in_one_package_within_16_mb_shielded_from_the_oom_killer(arm_board):
    d = arm_board.fresh("mixed")
    board_root = "/data/app"
    arm_board.sh("rm -rf {r} && mkdir -p {r}/bin && echo obsolete > {r}/obsolete.txt".format(r=board_root))
    # the raw partition the delta patches: mtd1 holds the old image
    kold = os.urandom(1 << 20)
    knew = bytearray(kold)
    knew[1000:1010] = b"patched!!!"
    knew[600000:700000] = os.urandom(100000)
    knew += os.urandom(50000)
    (d / "kernel.old").write_bytes(kold)
    (d / "kernel").write_bytes(bytes(knew))
    r = arm_board.otaunpack("-r", arm_board.path(block_package(d, d / "kernel.old", "/dev/mtd1", "old.bin")), "-q",
                            "-t", TMP)
    assert r.rc == 0, r.err
    # the file the other delta patches
    aold = os.urandom(300000)
    anew = aold[:100000] + b"new code" + aold[100000:] + b"x" * 20000
    (d / "app.old").write_bytes(aold)
    (d / "app.new").write_bytes(anew)
    arm_board.sh("cp %s %s/bin/app" % (arm_board.path(d / "app.old"), board_root))
    ubi = os.urandom(2 << 20)
    (d / "data.ubi").write_bytes(ubi)
    (d / "app.conf").write_text("mode=ota\n")
    (d / "new.bin").write_bytes(os.urandom(100000))
    oom = "cat /proc/self/oom_score_adj > %s/oom-%%s" % TMP
    (d / "begin.sh").write_text(oom % "begin" + "\n")
    (d / "end.sh").write_text(oom % "end" + "\necho $OTA_STATUS > %s/end-status\n" % TMP)
    (d / "rec.sh").write_text(oom % "record" + "\n")
    pkg = d / "mixed.bin"
    otapack("-c", pkg, "--manifest", "-b", d / "begin.sh", "-e", d / "end.sh")
    otapack("-a", pkg, "-s", d / "data.ubi", "-d", "/dev/ubi0_0", "--ubi-update")
    otapack("-a", pkg, "-s", d / "app.conf", "-d", board_root + "/app.conf", "-m", "0x1a4", "--file-update")
    otapack("-a", pkg, "-s", d / "new.bin", "-d", board_root + "/bin/new.bin", "--file-add")
    otapack("-a", pkg, "-d", board_root + "/obsolete.txt", "--file-delete")
    otapack("-a", pkg, "-o", d / "app.old", "-n", d / "app.new", "-d", board_root + "/bin/app", "--file-update-diff")
    otapack("-a", pkg, "-o", d / "kernel.old", "-n", d / "kernel", "-d", "/dev/mtd1", "--file-update-diff")
    otapack("-a", pkg, "-s", d / "rec.sh", "-d", "rec.sh", "--script-add")
    otapack("--gzip", pkg)
    arm_board.sh("rm -f %s/oom-* %s/end-status" % (TMP, TMP))
    r, peak_kb = arm_board.measured("-x", arm_board.path(d / "mixed.bin.gz"), "-q", "-t", TMP)
    assert r.rc == 0, r.err
    assert peak_kb <= 16 * 1024, peak_kb
    assert arm_board.sh("head -c %d /dev/ubi0_0 | sha256sum" % len(ubi)).split()[0] == sha(ubi)
    files = arm_board.sh("cd %s && sha256sum app.conf bin/new.bin bin/app && stat -c %%a app.conf" % board_root).split()
    assert files[0] == sha(b"mode=ota\n") and files[2] == sha((d / "new.bin").read_bytes()) and files[4] == sha(anew)
    assert files[6] == "644"
    assert arm_board.run("test -e %s/obsolete.txt" % board_root).rc == 1
    assert nand_sha(arm_board, 1, len(knew), TMP) == sha(bytes(knew))
    # shielded from the OOM killer while writing only: the script record inherits -1000
    assert arm_board.sh("cat %s/oom-begin %s/oom-record %s/oom-end %s/end-status" % ((TMP,) * 4)).split() == \
        ["0", "-1000", "0", "0"]
    # again, fully installed: every record is in place (the deltas by their result hash, the UBI
    # volume by its content and its unmapped LEBs), nothing is written; the scripts run again
    arm_board.sh("rm -f %s/oom-* %s/end-status" % (TMP, TMP))
    r = arm_board.otaunpack("-x", arm_board.path(d / "mixed.bin.gz"), "-q", "-t", TMP)
    assert r.rc == 0, r.err
    assert re.search(r"summary: 7 record\(s\): 1 written, 6 already in place; written: 0 file\(s\), "
                     r"0 flash erase block\(s\), 0 UBI volume\(s\)", r.err), r.err
    assert arm_board.sh("cat %s/oom-begin %s/oom-record %s/oom-end %s/end-status" % ((TMP,) * 4)).split() == \
        ["0", "-1000", "0", "0"]
    assert nand_sha(arm_board, 1, len(knew), TMP) == sha(bytes(knew))
    assert arm_board.sh("ls -a %s %s/bin | grep -c sstarota; true" % (board_root, board_root)).strip() == "0"
