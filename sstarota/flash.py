"""What the kernel says about flash: MTD partitions, UBI volumes, block devices.

Everything comes from sysfs and a few ioctls; no /proc parsing. Pure lookups: the
writers decide what to do with them.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import struct
from .recordclass import TYPE_CHECKING, dataclass

if TYPE_CHECKING:
    from typing import Optional

SYS_MTD = "/sys/class/mtd"
SYS_UBI = "/sys/class/ubi"

# ioctl numbers, as the kernel's _IOC macros build them (asm-generic/ioctl.h: ARM, arm64,
# x86; not MIPS or PowerPC): dir << 30 | size << 16 | type << 8 | nr. The size is the
# argument's C size on *this* ABI: size_t is 4 bytes on armhf, 8 on x86-64 and arm64.
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction, type_, nr, size):  # noqa: N802 (the kernel's name)
    if isinstance(type_, str):
        type_ = ord(type_)
    assert 0 <= size < 1 << 14 and 0 <= nr < 256 and 0 <= type_ < 256
    return direction << 30 | size << 16 | type_ << 8 | nr


def _IOW(type_, nr, fmt):  # noqa: N802
    return _IOC(_IOC_WRITE, type_, nr, struct.calcsize(fmt))


def _IOR(type_, nr, fmt):  # noqa: N802
    return _IOC(_IOC_READ, type_, nr, struct.calcsize(fmt))


# mtd-abi.h; struct.calcsize with "=" sizes fixed-width fields, native ("@N") the C size_t
MEMERASE = _IOW("M", 2, "=II")  # struct erase_info_user {__u32 start; __u32 length}: 0x40084D02
MEMERASE64 = _IOW("M", 20, "=QQ")  # struct erase_info_user64 {__u64 start; __u64 length}: 0x40104D14
MEMGETBADBLOCK = _IOW("M", 11, "=q")  # __kernel_loff_t: 0x40084D0B
MEMSETBADBLOCK = _IOW("M", 12, "=q")  # __kernel_loff_t: 0x40084D0C
# fs.h: _IOR(0x12, 114, size_t): 0x80081272 on 64-bit ABIs, 0x80041272 on armhf
BLKGETSIZE64 = _IOR(0x12, 114, "@N")
# ubi-user.h: _IOW('O', 0, __s64)
UBI_IOCVOLUP = _IOW("O", 0, "=q")  # 0x40084F00
# ubi-user.h: _IOR('O', 5, __s32): is this LEB of the volume mapped (1) or not (0)
UBI_IOCEBISMAP = _IOR("O", 5, "=i")  # 0x80044F05

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
    leb_size: int = 0  # usable bytes per LEB


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
            leb = int(_read(os.path.join(base, "usable_eb_size")))
            return UbiVolume(name, _read(os.path.join(base, "name")), _read(os.path.join(base, "type")),
                             int(_read(os.path.join(base, "reserved_ebs"))) * leb,
                             int(_read(os.path.join(base, "data_bytes"))), leb)
        except OSError:
            continue
    return None


def leb_mapped(fd, lnum):
    """Whether LEB lnum of the UBI volume open on fd is mapped (holds data)."""
    return fcntl.ioctl(fd, UBI_IOCEBISMAP, bytearray(struct.pack("=i", lnum)), True) == 1


def block_device_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(8)  # the number says size_t (its historical header), the kernel writes a u64
        fcntl.ioctl(fd, BLKGETSIZE64, buf, True)
        return struct.unpack("=Q", buf)[0]
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
