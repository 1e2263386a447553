"""What the kernel says about flash: MTD partitions, UBI volumes, block devices.

Everything comes from sysfs and a few ioctls; no /proc parsing. Pure lookups: the
writers decide what to do with them.
"""

import fcntl
import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Optional

SYS_MTD = "/sys/class/mtd"
SYS_UBI = "/sys/class/ubi"

# mtd-abi.h: _IOW('M', nr, size) = 1 << 30 | size << 16 | ord('M') << 8 | nr
MEMERASE = 0x40084D02  # struct erase_info_user {u32 start; u32 length}
MEMERASE64 = 0x40104D14  # struct erase_info_user64 {u64 start; u64 length}
MEMGETBADBLOCK = 0x40084D0B  # loff_t
MEMSETBADBLOCK = 0x40084D0C  # loff_t
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)

MTD_CHAR_MAJOR = 90
MTD_BLOCK_MAJOR = 31


def _read(path):
    with open(path) as f:
        return f.read().strip()


@dataclass
class MtdInfo:
    index: int
    name: str
    type: str  # "nand", "nor", "ram", ...
    size: int
    erasesize: int
    writesize: int
    bad_blocks: int

    @property
    def char_path(self):
        return "/dev/mtd%d" % self.index

    @property
    def usable(self):
        """Bytes left for an image once the known bad blocks are skipped."""
        return self.size - self.bad_blocks * self.erasesize


def mtd_info(index, sys_mtd=SYS_MTD):
    base = os.path.join(sys_mtd, "mtd%d" % index)
    bad = 0
    if os.path.exists(os.path.join(base, "bad_blocks")):
        bad = int(_read(os.path.join(base, "bad_blocks")))
    return MtdInfo(index, _read(os.path.join(base, "name")), _read(os.path.join(base, "type")),
                   int(_read(os.path.join(base, "size"))), int(_read(os.path.join(base, "erasesize"))),
                   int(_read(os.path.join(base, "writesize"))), bad)


def mtd_index_of(path, sys_mtd=SYS_MTD):
    """The MTD number behind /dev/mtdN or /dev/mtdblockN (device nodes only), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == MTD_CHAR_MAJOR:
        index = os.minor(st.st_rdev) // 2  # mtdN is minor 2N, mtdNro 2N+1
    elif stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == MTD_BLOCK_MAJOR:
        index = os.minor(st.st_rdev)
    else:
        return None
    if not os.path.isdir(os.path.join(sys_mtd, "mtd%d" % index)):
        return None
    return index


@dataclass
class UbiVolume:
    name: str  # ubiX_Y
    vol_name: str
    type: str  # "static" or "dynamic"
    capacity: int  # reserved LEBs x usable LEB size
    data_bytes: int


def ubi_volume(path, sys_ubi=SYS_UBI):
    """The UBI volume behind a /dev/ubiX_Y node, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    devnum = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if not os.path.isdir(sys_ubi):
        return None
    for name in os.listdir(sys_ubi):
        if not re.match(r"^ubi\d+_\d+$", name):
            continue
        base = os.path.join(sys_ubi, name)
        try:
            if _read(os.path.join(base, "dev")) != devnum:
                continue
            return UbiVolume(name, _read(os.path.join(base, "name")), _read(os.path.join(base, "type")),
                             int(_read(os.path.join(base, "reserved_ebs"))) * int(_read(os.path.join(base, "usable_eb_size"))),
                             int(_read(os.path.join(base, "data_bytes"))))
        except OSError:
            continue
    return None


def block_device_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, BLKGETSIZE64, buf, True)
        return struct.unpack("<Q", buf)[0]
    finally:
        os.close(fd)


def is_bad(fd, offset):
    buf = bytearray(struct.pack("<q", offset))
    try:
        return fcntl.ioctl(fd, MEMGETBADBLOCK, buf, True) > 0
    except OSError:
        return False  # NOR and RAM devices have no bad blocks (EOPNOTSUPP)


def mark_bad(fd, offset):
    buf = bytearray(struct.pack("<q", offset))
    try:
        fcntl.ioctl(fd, MEMSETBADBLOCK, buf, True)
        return True
    except OSError:
        return False


def erase(fd, offset, length):
    if offset + length <= 0xFFFFFFFF:
        fcntl.ioctl(fd, MEMERASE, struct.pack("<II", offset, length))
    else:
        fcntl.ioctl(fd, MEMERASE64, struct.pack("<QQ", offset, length))


def device_capacity(path) -> Optional[int]:
    """Bytes an image may occupy on a device target: an MTD partition less its bad blocks,
    a UBI volume's reserved size, a block device's size. None for a plain file."""
    index = mtd_index_of(path)
    if index is not None:
        return mtd_info(index).usable
    vol = ubi_volume(path)
    if vol is not None:
        return vol.capacity
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        return block_device_size(path)
    return None
