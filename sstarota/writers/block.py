"""block: a raw image written at offset 0 of an MTD partition, a block device, or (when
staging under --root) a partition image file.

/dev/mtdN and /dev/mtdblockN targets both go through the MTD writer on /dev/mtdN
(mtdblock cannot skip bad blocks); other block devices are written in place and fsynced.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import flash, schema
from ..confine import AtomicAt, fd_path
from ..flashio import MtdSink, open_current
from .base import DeviceFile, Writer, partition_node, register, replaced_file
from .compare import Compare, Known
from ..recordclass import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Union


def pad_len(rec):
    """The legacy raw op fills dst_size with 0xFF before writing: pad after the data."""
    if rec.legacy_op == schema.LEGACY_RAW and rec.dst_size > rec.data_len:
        return rec.dst_size - rec.data_len
    return 0


def copy_sparse(src, out, chunk=1 << 20):
    """The rest of a staged image (src, an fd) after what out (a file) holds, at the same
    offsets, its holes and zero blocks left as holes: a mostly empty eMMC partition image is
    not written out whole for one record."""
    start = out.tell()
    size = os.fstat(src).st_size
    pos = start
    while pos < size:
        end = size
        if hasattr(os, "SEEK_DATA"):
            try:
                pos = os.lseek(src, pos, os.SEEK_DATA)
                end = os.lseek(src, pos, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole after pos
                    break
                end = size  # no SEEK_DATA on this filesystem: read the rest
        while pos < end:
            piece = os.pread(src, min(chunk, end - pos), pos)
            if not piece:
                break
            if piece.count(0) != len(piece):
                out.seek(pos)
                out.write(piece)
            pos += len(piece)
    if size > start:
        out.truncate(size)


@register(schema.OP_BLOCK)
class BlockWriter(Writer):
    out: Union[DeviceFile, AtomicAt]  # set by open() unless the MTD writer (self.mtd) takes the data
    devices = True

    @classmethod
    def makes_dirs(cls, image_file):
        return image_file

    @classmethod
    def device_supported(cls, st, path):
        return partition_node(st, path)

    @classmethod
    def pad(cls, rec):
        return pad_len(rec)

    @classmethod
    def device_bytes(cls, rec, result_size):
        return rec.data_len + pad_len(rec), "the image"

    @classmethod
    def comparer(cls, rec, dest):
        """The partition, block device or staged image starts with the data (then the fill)."""
        if dest.kind not in ("file", "device"):
            return Known(False)
        return Compare(open_current(dest), lambda f: True)

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
            with os.fdopen(self.dest.loc.open(os.O_RDONLY | os.O_NONBLOCK), "rb") as old:
                assert isinstance(self.out, AtomicAt)  # a staged image (open)
                copy_sparse(old.fileno(), self.out.f)
        self.out.commit()
        self.ctx.written.files += 1

    def abort(self):
        (self.mtd or self.out).abort()
