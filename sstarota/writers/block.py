"""block: a raw image written at offset 0 of an MTD partition, a block device, or (when
staging under --root) a partition image file.

/dev/mtdN and /dev/mtdblockN targets both go through the MTD writer on /dev/mtdN
(mtdblock cannot skip bad blocks); other block devices are written in place and fsynced.
"""

import os
import stat

from .. import flash, schema
from ..confine import fd_path
from ..flashio import MtdSink
from ..fsutil import copy_stream
from .base import DeviceFile, Writer, register, replaced_file


def pad_len(rec):
    """The legacy raw op fills dst_size with 0xFF before writing: pad after the data."""
    if rec.legacy_op == schema.LEGACY_RAW and rec.dst_size > rec.data_len:
        return rec.dst_size - rec.data_len
    return 0


@register(schema.OP_BLOCK)
class BlockWriter(Writer):
    def open(self):
        self.mtd = None
        self.device = self.dest.kind == "device"
        if self.device:
            fd = self.dest.open_device(os.O_RDWR)
            index = flash.mtd_index_of(fd_path(fd))
            if index is None:
                self.out = DeviceFile(fd, self.ctx.written)
                return
            # /dev/mtdN itself, or /dev/mtdblockN whose MTD is written through /dev/mtdN (mtdblock
            # cannot skip bad blocks)
            char = stat.S_ISCHR(os.fstat(fd).st_mode)
            if not char:
                os.close(fd)
            self.mtd = MtdSink(flash.mtd_info(index), on_stage=self._stage, fd=fd if char else None)
        else:
            # a staging partition image: the image replaces its first bytes, the rest stays
            self.out = replaced_file(self.ctx, self.dest, 0o644)

    def _stage(self, stage):
        """Erasing and updating alternate per erase block: tell the progress when it changes."""
        progress = self.ctx.progress
        if progress is not None and progress.last.stage != stage:
            progress.emit(stage)

    def write(self, block):
        (self.mtd or self.out).write(block)

    def commit(self):
        pad = pad_len(self.rec)
        while pad:
            n = min(pad, 1 << 20)
            self.write(b"\xff" * n)
            pad -= n
        if self.mtd is not None:
            counts = self.mtd.close()
            self.ctx.written.flash_blocks += counts.written + counts.erased_only
            summary = counts.summary(self.mtd.info)
            self.ctx.note(summary)
            if self.ctx.progress is not None:
                self.ctx.progress.emit("updating", message=summary)
            return
        if self.device:
            self.out.commit()
            return
        if self.dest.kind == "file":
            written = self.out.f.tell()
            with os.fdopen(self.dest.loc.open(os.O_RDONLY | os.O_NONBLOCK), "rb") as old:
                old.seek(written)
                copy_stream(old.read, self.out.write)
        self.out.commit()
        self.ctx.written.files += 1

    def abort(self):
        (self.mtd or self.out).abort()
