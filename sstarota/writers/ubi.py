"""ubi: a UBI volume image, through UBI_IOCVOLUP on a volume node, else an image file."""

import fcntl
import os
import stat
import struct

from .. import schema
from .base import AtomicFile, Writer, register

# _IOW('O', 0, __s64): start a volume update of the given byte count
UBI_IOCVOLUP = 0x40084F00


def is_ubi_volume(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISCHR(st.st_mode):
        return False
    name = os.path.basename(os.path.realpath(path))
    return os.path.isdir("/sys/class/ubi/%s" % name)


@register(schema.OP_UBI)
class UbiWriter(Writer):
    def open(self):
        self.volume = is_ubi_volume(self.path)
        if self.volume:
            self.fd = os.open(self.path, os.O_WRONLY)
            fcntl.ioctl(self.fd, UBI_IOCVOLUP, struct.pack("<q", self.rec.data_len))
            self.out = None
        else:
            self.out = AtomicFile(self.path, mode=0o644)

    def write(self, block):
        if self.volume:
            view = memoryview(block)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        else:
            self.out.write(block)

    def commit(self):
        if self.volume:
            os.fsync(self.fd)
            os.close(self.fd)
        else:
            self.out.commit()

    def abort(self):
        if self.volume:
            os.close(self.fd)
        else:
            self.out.abort()
