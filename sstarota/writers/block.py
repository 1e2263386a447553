"""block: a raw image written at offset 0 of a block/MTD device (or a partition image file)."""

import os

from .. import schema
from .base import AtomicFile, Writer, is_device, register


def pad_len(rec):
    """The legacy raw op fills dst_size with 0xFF before writing: pad after the data."""
    if rec.legacy_op == schema.LEGACY_RAW and rec.dst_size > rec.data_len:
        return rec.dst_size - rec.data_len
    return 0


@register(schema.OP_BLOCK)
class BlockWriter(Writer):
    def open(self):
        self.device = is_device(self.path)
        if self.device:
            self.fd = os.open(self.path, os.O_WRONLY)
            self.out = None
        else:
            # a staging partition image: the image replaces its first bytes, the rest stays
            self.out = AtomicFile(self.path, mode=0o644)
            self.fd = None

    def write(self, block):
        if self.device:
            view = memoryview(block)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        else:
            self.out.write(block)

    def commit(self):
        pad = pad_len(self.rec)
        while pad:
            n = min(pad, 1 << 20)
            self.write(b"\xff" * n)
            pad -= n
        if self.device:
            os.fsync(self.fd)
            os.close(self.fd)
            return
        written = self.out.f.tell()
        try:
            with open(self.path, "rb") as old:
                old.seek(written)
                while True:
                    piece = old.read(1 << 20)
                    if not piece:
                        break
                    self.out.write(piece)
        except FileNotFoundError:
            pass
        self.out.commit()

    def abort(self):
        if self.device:
            os.close(self.fd)
        else:
            self.out.abort()
