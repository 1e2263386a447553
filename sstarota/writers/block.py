"""block: a raw image written at offset 0 of an MTD partition, a block device, or (when
staging under --root) a partition image file.

/dev/mtdN and /dev/mtdblockN targets both go through the MTD writer on /dev/mtdN
(mtdblock cannot skip bad blocks); other block devices are written in place and fsynced.
"""

from .. import flash, schema
from ..errors import PackageError
from ..flashio import MtdSink, is_device
from .base import DeviceFile, ReplacedFile, Writer, check_device_target, register


def pad_len(rec):
    """The legacy raw op fills dst_size with 0xFF before writing: pad after the data."""
    if rec.legacy_op == schema.LEGACY_RAW and rec.dst_size > rec.data_len:
        return rec.dst_size - rec.data_len
    return 0


def check_fits(rec, target, path, need):
    """Reject (in the verify pass) an image larger than its device target."""
    capacity = flash.device_capacity(path)
    if capacity is not None and need > capacity:
        raise PackageError("record %d: the image is %d bytes, larger than %s can hold (%d bytes%s)"
                           % (rec.index, need, target, capacity, _bad_note(path)))


def _bad_note(path):
    index = flash.mtd_index_of(path)
    if index is None:
        return ""
    info = flash.mtd_info(index)
    return ", mtd%d less %d bad blocks" % (index, info.bad_blocks)


@register(schema.OP_BLOCK)
class BlockWriter(Writer):
    @classmethod
    def check(cls, ctx, rec, target, path):
        check_device_target(ctx, rec, target, path)
        check_fits(rec, target, path, rec.data_len + pad_len(rec))

    def open(self):
        self.mtd = None
        index = flash.mtd_index_of(self.path)
        self.device = is_device(self.path)
        if index is not None:
            self.mtd = MtdSink(flash.mtd_info(index), on_stage=self._stage)
        elif self.device:
            self.out = DeviceFile(self.path)
        else:
            # a staging partition image: the image replaces its first bytes, the rest stays
            self.out = ReplacedFile(self.path, 0o644)

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
            summary = counts.summary(self.mtd.info)
            self.ctx.note(summary)
            if self.ctx.progress is not None:
                self.ctx.progress.emit("updating", message=summary)
            return
        if self.device:
            self.out.commit()
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
        (self.mtd or self.out).abort()
