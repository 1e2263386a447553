"""ubi: a UBI volume image, through UBI_IOCVOLUP on a volume node (as ubiupdatevol does),
read back and compared; else (staging under --root) an image file replaced atomically."""

import fcntl
import hashlib
import os
import stat
import struct

from .. import flash, schema
from ..confine import fd_path
from ..fsutil import IO_CHUNK
from ..errors import InstallError
from .base import DeviceFile, Output, Writer, register, replaced_file
from .compare import Compare, Known, whole_file

# _IOW('O', 0, __s64): start a volume update of the given byte count
UBI_IOCVOLUP = flash.UBI_IOCVOLUP


@register(schema.OP_UBI)
class UbiWriter(Writer):
    out: Output  # set by open()
    devices = True
    device_kind = "a UBI volume"

    @classmethod
    def makes_dirs(cls, image_file):
        return image_file

    @classmethod
    def device_supported(cls, st, path):
        return stat.S_ISCHR(st.st_mode) and flash.ubi_volume(path) is not None

    @classmethod
    def device_bytes(cls, rec, result_size):
        return rec.data_len + cls.pad(rec), "the image"

    @classmethod
    def comparer(cls, rec, dest):
        """A volume: it starts with the data and holds nothing after it; a staged image: the whole file."""
        if dest.kind == "file":
            return whole_file(rec, dest)
        if dest.kind == "device":
            return _volume(rec, dest)
        return Known(False)

    def open(self):
        self.volume = self.dest.kind == "device"  # the verify pass accepts UBI volume nodes only
        self.sha = hashlib.sha256()
        if self.volume:
            self.out = DeviceFile(self.dest.open_device(os.O_RDWR))
            if self.ctx.progress is not None:
                self.ctx.progress.emit("erasing", message="UBI volume update")
            fcntl.ioctl(self.out.fd, UBI_IOCVOLUP, struct.pack("<q", self.rec.data_len))
            if self.ctx.progress is not None:
                self.ctx.progress.emit("updating")
        else:
            self.out = replaced_file(self.ctx, self.dest, 0o644)

    def write(self, block):
        self.sha.update(block)
        self.out.write(block)

    def commit(self):
        self.out.commit()
        if self.volume:
            self.ctx.written.volumes += 1
            self._read_back()
        else:
            self.ctx.written.files += 1

    def _read_back(self):
        """Static volumes report the exact size, dynamic ones their reserved size: compare
        the first data_len bytes either way."""
        with os.fdopen(self.dest.open_device(os.O_RDONLY), "rb") as f:
            vol = flash.ubi_volume(fd_path(f.fileno()))
            if vol is not None and vol.type == "static" and vol.data_bytes != self.rec.data_len:
                raise InstallError("%s holds %d bytes after the update, expected %d"
                                   % (self.target, vol.data_bytes, self.rec.data_len))
            h = hashlib.sha256()
            left = self.rec.data_len
            while left:
                piece = f.read(min(left, IO_CHUNK))
                if not piece:
                    break
                h.update(piece)
                left -= len(piece)
        if left or h.digest() != self.sha.digest():
            raise InstallError("%s: read-back after the volume update differs from the image" % self.target)
        self.ctx.note("%s (%s volume %s): %d bytes written and read back" % (self.target, vol.type if vol else "?",
                                                                           vol.vol_name if vol else "?",
                                                                           self.rec.data_len))


def _volume(rec, dest):
    """Static volumes: their data size; dynamic ones: 0xFF to the end of the data's last LEB,
    later LEBs unmapped."""
    fd = dest.open_device(os.O_RDONLY)
    f = os.fdopen(fd, "rb")
    vol = flash.ubi_volume(fd_path(fd))
    if vol is None or (vol.type == "static" and vol.data_bytes != rec.data_len) or rec.data_len > vol.capacity:
        f.close()
        return Known(False)
    n = rec.data_len

    def nothing_after(f):
        if vol.type == "static" or not vol.leb_size:
            return vol.type == "static"
        left = -(-n // vol.leb_size) * vol.leb_size - n  # the rest of the data's last LEB
        while left:
            piece = f.read(min(left, 1 << 17))
            if not piece or piece.count(0xFF) != len(piece):
                return False
            left -= len(piece)
        return not any(flash.leb_mapped(fd, lnum) for lnum in range(-(-n // vol.leb_size), vol.capacity // vol.leb_size))

    return Compare(f, nothing_after)
