"""ioctl numbers come from their argument's size on this ABI (flash._IOC), never hard-coded:
BLKGETSIZE64 differs between 32- and 64-bit boards. The armhf board checks them by use."""

import struct

from sstarota import flash

# (name, the kernel's number on a 64-bit ABI, on armhf) from <mtd/mtd-abi.h>, <linux/fs.h>,
# <mtd/ubi-user.h> as built by a 64-bit and a 32-bit ARM compiler
KNOWN = [("MEMERASE", 0x40084D02, 0x40084D02), ("MEMERASE64", 0x40104D14, 0x40104D14),
         ("MEMGETBADBLOCK", 0x40084D0B, 0x40084D0B), ("MEMSETBADBLOCK", 0x40084D0C, 0x40084D0C),
         ("BLKGETSIZE64", 0x80081272, 0x80041272), ("UBI_IOCVOLUP", 0x40084F00, 0x40084F00),
         ("UBI_IOCEBISMAP", 0x80044F05, 0x80044F05)]


def test_ioctl_numbers_match_the_kernel_headers_on_this_abi():
    column = 1 if struct.calcsize("@N") == 8 else 2
    for row in KNOWN:
        assert getattr(flash, row[0]) == row[column], (row[0], hex(getattr(flash, row[0])))


def test_ioc_encodes_the_size_field():
    assert flash._IOC(flash._IOC_READ, 0x12, 114, 4) == 0x80041272
    assert flash._IOC(flash._IOC_READ, 0x12, 114, 8) == 0x80081272
    assert flash._IOW("M", 2, "=II") == 0x40084D02
