"""Flash writers against the kernel's own drivers: nandsim (NAND with two factory bad blocks
inside the target partition), mtdram (NOR-like), UBI and UBIFS. Runs in the qemu board."""

import hashlib
import os
import re
import subprocess

import pytest

from sstarota import packer

from support import block_package, mtd_summary

pytestmark = [pytest.mark.board, pytest.mark.xdist_group("board")]  # one booted board: one worker

EB_NAND = 128 << 10
EB_NOR = 64 << 10


def in_place(err):
    """The record was found in place by the verify pass: skipped, no flash block written (no
    script ran since, so the package is not even read a second time)."""
    assert "every record is in place: nothing to write, the package is not read again" in err, err
    assert re.search(r"summary: 1 record\(s\): 0 written, 1 already in place; written: 0 file\(s\), "
                     r"0 flash erase block\(s\), 0 UBI volume\(s\)", err), err
    return True


def read_back(board, mtd, length, out, nand=True):
    """The partition's first `length` bytes as the kernel returns them (bad blocks skipped)."""
    if nand:
        board.sh("nanddump --bb=skipbad -q -l %d -f %s /dev/mtd%d" % (length, board.path(out), mtd))
    else:
        board.sh("head -c %d /dev/mtd%d > %s" % (length, mtd, board.path(out)))
    return out.read_bytes()[:length]


@pytest.mark.parametrize("target", ["/dev/mtdblock5", "/dev/mtd5"])
def test_nand_block_update_skips_bad_blocks_and_is_idempotent(board, target):
    d = board.fresh("nand-" + target.rsplit("/", 1)[1])
    size = 7 * EB_NAND + 5000  # 8 erase blocks: crosses both bad blocks (erase blocks 2 and 5)
    image = d / "image.bin"
    image.write_bytes(os.urandom(size))
    board.sh("flash_erase -q /dev/mtd5 0 0")
    pkg = block_package(d, image, target)
    r = board.otaunpack("-r", board.path(pkg), "-q", "--progress-fd", "3", "3>%s" % board.path(d / "ev1"))
    assert r.rc == 0, r.err
    assert mtd_summary(r.err, 5) == (8, 0, 2, 0)
    assert read_back(board, 5, size, d / "dump") == image.read_bytes()
    assert "erasing" in (d / "ev1").read_text()  # the progress says when blocks are erased
    # the same package again: in place (compared in the verify pass), nothing erased, nothing written
    r = board.otaunpack("-r", board.path(pkg), "-q", "--progress-fd", "3", "3>%s" % board.path(d / "ev2"))
    assert r.rc == 0 and in_place(r.err)
    assert "erasing" not in (d / "ev2").read_text()
    # one byte changed: exactly one block rewritten
    data = bytearray(image.read_bytes())
    data[3 * EB_NAND + 77] ^= 0xFF
    image.write_bytes(bytes(data))
    pkg2 = block_package(d, image, target, "p2.bin")
    r = board.otaunpack("-r", board.path(pkg2), "-q")
    assert r.rc == 0 and mtd_summary(r.err, 5) == (1, 7, 2, 0)
    assert read_back(board, 5, size, d / "dump") == bytes(data)


def test_a_block_failing_to_erase_is_marked_bad_and_skipped(board):
    """mtd2's erase block 1 fails its second erase (nandsim weakblocks): the writer marks it
    bad and carries the data on to the next block, as nandwrite would."""
    d = board.fresh("weak")
    board.sh("flash_erase -q /dev/mtd2 0 0")  # the weak block's one good erase
    size = 4 * EB_NAND
    image = d / "image.bin"
    image.write_bytes(os.urandom(size))
    r = board.otaunpack("-r", board.path(block_package(d, image, "/dev/mtd2")), "-q")
    assert r.rc == 0, r.err
    assert mtd_summary(r.err, 2) == (4, 0, 0, 1)
    assert board.sh("cat /sys/class/mtd/mtd2/bad_blocks").strip() == "1"
    assert read_back(board, 2, size, d / "dump") == image.read_bytes()
    # from now on the block is a known bad block: skipped, not erased again (the last byte
    # changed, so that the writer runs: the image's other blocks are equal)
    data = bytearray(image.read_bytes())
    data[-1] ^= 1
    image.write_bytes(bytes(data))
    r = board.otaunpack("-r", board.path(block_package(d, image, "/dev/mtd2", "p2.bin")), "-q")
    assert r.rc == 0 and mtd_summary(r.err, 2) == (1, 3, 1, 0)
    assert read_back(board, 2, size, d / "dump") == bytes(data)


def test_mtdblock_alone_cannot_do_this(board):
    """Why the writer goes through /dev/mtdN: plain writes to mtdblock hit the bad block."""
    d = board.fresh("raw-mtdblock")
    board.sh("flash_erase -q /dev/mtd5 0 0")
    image = d / "image.bin"
    image.write_bytes(os.urandom(3 * EB_NAND))
    r = board.run("dd if=%s of=/dev/mtdblock5 bs=128k conv=fsync 2>&1" % board.path(image))
    dumped = read_back(board, 5, 3 * EB_NAND, d / "dump")
    assert r.rc != 0 or dumped != image.read_bytes()


@pytest.mark.parametrize("target", ["/dev/mtdblock7", "/dev/mtd7"])
def test_nor_block_update_is_idempotent(board, target):
    d = board.fresh("nor-" + target.rsplit("/", 1)[1])
    size = 20 * EB_NOR + 123
    image = d / "image.bin"
    image.write_bytes(os.urandom(size))
    board.sh("flash_erase -q /dev/mtd7 0 0")
    pkg = block_package(d, image, target)
    r = board.otaunpack("-r", board.path(pkg), "-q")
    assert r.rc == 0, r.err
    assert mtd_summary(r.err, 7) == (21, 0, 0, 0)
    assert read_back(board, 7, size, d / "dump", nand=False) == image.read_bytes()
    r = board.otaunpack("-r", board.path(pkg), "-q")
    assert r.rc == 0 and in_place(r.err)
    data = bytearray(image.read_bytes())
    data[-1] ^= 1
    image.write_bytes(bytes(data))
    r = board.otaunpack("-r", board.path(block_package(d, image, target, "p2.bin")), "-q")
    assert r.rc == 0 and mtd_summary(r.err, 7) == (1, 20, 0, 0)
    assert read_back(board, 7, size, d / "dump", nand=False) == bytes(data)


def test_image_bigger_than_its_partition_is_rejected_before_the_begin_script(board):
    d = board.fresh("too-big")
    begin = d / "begin.sh"
    begin.write_text("touch /tmp/begin-ran\n")
    board.sh("rm -f /tmp/begin-ran")
    # mtd4 is 1 MiB; mtd5 is 24 MiB of which 2 erase blocks are bad
    for target, size, why in (("/dev/mtdblock4", (1 << 20) + 1, "/dev/mtdblock4 can hold (1048576 bytes"),
                              ("/dev/mtd5", (24 << 20) - EB_NAND, "mtd5 less 2 bad blocks")):
        image = d / "big.bin"
        with open(image, "wb") as f:
            f.truncate(size)
        pkg = block_package(d, image, target, begin=str(begin))
        r = board.otaunpack("-r", board.path(pkg), "-q")
        assert r.rc == 3, r.err
        assert why in r.err and "larger than" in r.err
        assert board.run("test -e /tmp/begin-ran").rc != 0
    # a UBI volume too: ubi0_1 is a static volume of 8 MiB
    image = d / "big.ubi"
    with open(image, "wb") as f:
        f.truncate(9 << 20)
    pkg = d / "u.bin"
    packer.create(str(pkg), begin=str(begin))
    packer.append(str(pkg), packer.operation_specs("ubi-update", src=str(image), dst="/dev/ubi0_1"))
    r = board.otaunpack("-r", board.path(pkg), "-q")
    assert r.rc == 3 and "larger than /dev/ubi0_1 can hold" in r.err
    assert board.run("test -e /tmp/begin-ran").rc != 0


def _tree(root, files):
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)


def test_ubifs_image_into_a_volume_then_a_dir_update_on_the_mounted_fs(board):
    d = board.fresh("ubifs")
    old = {"etc/app.conf": b"fps=25\n", "bin/tool": os.urandom(50000), "gone.txt": b"bye\n"}
    new = {"etc/app.conf": b"fps=30\n", "bin/tool": os.urandom(50000), "etc/new.conf": b"new\n"}
    _tree(d / "old", old)
    _tree(d / "new", new)
    leb = int(board.sh("cat /sys/class/ubi/ubi0/eraseblock_size"))
    min_io = int(board.sh("cat /sys/class/ubi/ubi0/min_io_size"))
    img = d / "rootfs.ubifs"
    subprocess.run(["mkfs.ubifs", "-m", str(min_io), "-e", str(leb), "-c", "300", "-r", str(d / "old"),
                    "-o", str(img)], check=True)
    pkg = d / "ubi.bin"
    packer.create(str(pkg))
    packer.append(str(pkg), packer.operation_specs("ubi-update", src=str(img), dst="/dev/ubi0_0"))
    board.sh("umount /mnt/ubi 2>/dev/null; true")
    r = board.otaunpack("-r", board.path(pkg), "-q")
    assert r.rc == 0, r.err
    assert "/dev/ubi0_0 (dynamic volume rootfs): %d bytes written and read back" % img.stat().st_size in r.err
    board.sh("mount -t ubifs ubi0:rootfs /mnt/ubi")
    try:
        for rel, content in old.items():
            assert board.sh("sha256sum /mnt/ubi/%s" % rel).split()[0] == hashlib.sha256(content).hexdigest()
        # a dir update onto the mounted UBIFS
        pkg2 = d / "dir.bin"
        packer.create(str(pkg2))
        packer.append(str(pkg2), packer.operation_specs("dir-update", old=str(d / "old"), new=str(d / "new"),
                                                    dst="/mnt/ubi"))
        r = board.otaunpack("-r", board.path(pkg2), "-q")
        assert r.rc == 0, r.err
        listing = board.sh("cd /mnt/ubi && find . -type f | sort | xargs sha256sum")
        got = {line.split()[1][2:]: line.split()[0] for line in listing.splitlines()}
        assert got == {rel: hashlib.sha256(c).hexdigest() for rel, c in new.items()}
    finally:
        board.run("umount /mnt/ubi")
    # and the files survive a remount (they were synced, not just cached)
    board.sh("mount -t ubifs ubi0:rootfs /mnt/ubi")
    try:
        assert board.sh("cat /mnt/ubi/etc/new.conf") == "new\n"
    finally:
        board.run("umount /mnt/ubi")
