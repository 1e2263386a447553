"""Flash I/O: streaming onto and reading from MTD partitions, and what a delta patches.

MtdSink writes bad-block-aware and idempotent, as nandwrite does and more.

Per erase block: a bad block is skipped and the data carried on to the next good one; a
block that already holds the data (followed by erased 0xFF) is left alone; otherwise the
block is erased, written (the tail padded with 0xFF to the page size), read back and
compared. A failed erase, write or compare marks the block bad and the same data goes to
the next block. Running out of good blocks fails the record. NOR and RAM devices take the
same path (they report no bad blocks).
"""

import io
import os

from . import flash
from .confine import fd_path
from .errors import InstallError
from .fsutil import write_all
from .recordclass import dataclass


@dataclass
class Counts:
    written: int = 0
    equal: int = 0
    bad_skipped: int = 0
    marked_bad: int = 0
    erased_only: int = 0

    def summary(self, info):
        return ("mtd%d (%s): %d blocks written, %d equal (left alone), %d bad skipped, %d marked bad"
                % (info.index, info.name, self.written + self.erased_only, self.equal, self.bad_skipped,
                   self.marked_bad))


class MtdSink:
    """Streams an image onto /dev/mtdN from offset 0, one erase block at a time."""

    def __init__(self, info, on_stage=None, fd=None):
        """fd: /dev/mtdN already open read-write (else it is opened here by its name)."""
        self.info = info
        self.eb = info.erasesize
        self.page = max(info.writesize, 1)
        self.fd = fd if fd is not None else os.open(info.char_path, os.O_RDWR)
        self.pos = 0  # next physical erase-block offset in the partition
        self.buf = bytearray()
        self.counts = Counts()
        self.on_stage = on_stage or (lambda stage: None)

    def write(self, data):
        self.buf += data
        while len(self.buf) >= self.eb:
            block = bytes(self.buf[:self.eb])
            del self.buf[:self.eb]
            self._put(block, self.eb)

    def close(self):
        """Write what is left (a partial last block) and close; returns the counts."""
        if self.buf:
            n = len(self.buf)
            self._put(bytes(self.buf) + b"\xff" * (self.eb - n), n)
            self.buf = bytearray()
        os.close(self.fd)
        self.fd = None
        return self.counts

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self, offset, n):
        os.lseek(self.fd, offset, os.SEEK_SET)
        out = bytearray()
        while len(out) < n:
            piece = os.read(self.fd, n - len(out))
            if not piece:
                break
            out += piece
        return bytes(out)

    def _put(self, block, data_len):
        """Place one erase block of data (padded with 0xFF to the block size)."""
        blank = block.count(0xFF) == len(block)
        write_len = -(-data_len // self.page) * self.page
        while True:
            if self.pos + self.eb > self.info.size:
                raise InstallError("mtd%d (%s) has no good erase block left for the rest of the image "
                                   "(%d bytes per block, %d bad)" % (self.info.index, self.info.name, self.eb,
                                                                   self.counts.bad_skipped + self.counts.marked_bad))
            offset = self.pos
            self.pos += self.eb
            if flash.is_bad(self.fd, offset):
                self.counts.bad_skipped += 1
                continue
            try:
                current = self._read(offset, self.eb)
            except OSError:
                current = None  # unreadable (ECC failure): rewrite it
            if current == block:
                self.counts.equal += 1
                return
            try:
                self.on_stage("erasing")
                flash.erase(self.fd, offset, self.eb)
                self.on_stage("updating")
                if not blank:
                    os.lseek(self.fd, offset, os.SEEK_SET)
                    write_all(self.fd, memoryview(block)[:write_len])
                if self._read(offset, self.eb) != block:
                    raise OSError("read-back differs")
            except OSError:
                flash.mark_bad(self.fd, offset)
                self.counts.marked_bad += 1
                continue
            if blank:
                self.counts.erased_only += 1
            else:
                self.counts.written += 1
            return


class MtdReader(io.RawIOBase):
    """Reads an MTD partition as nanddump --bb=skipbad does: bad blocks are not there.

    Seekable; offsets are logical (over the good blocks only). Used to read the old image
    a raw partition delta applies to."""

    def __init__(self, info):
        super().__init__()
        self.info = info
        self.fd = os.open(info.char_path, os.O_RDONLY)
        eb = info.erasesize
        self.good = [off for off in range(0, info.size - eb + 1, eb) if not flash.is_bad(self.fd, off)]
        self.size = len(self.good) * eb
        self.pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, b):
        eb = self.info.erasesize
        if self.pos >= self.size:
            return 0
        block, within = divmod(self.pos, eb)
        n = min(len(b), eb - within, self.size - self.pos)
        os.lseek(self.fd, self.good[block] + within, os.SEEK_SET)
        data = os.read(self.fd, n)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self):
        if not self.closed:
            os.close(self.fd)
        super().close()


def open_content(path):
    """A readable, seekable view of a target's current content: bad-block-free for MTD."""
    index = flash.mtd_index_of(path)
    if index is not None:
        return io.BufferedReader(MtdReader(flash.mtd_info(index)), 128 << 10)
    return open(path, "rb")


def open_current(dest):
    """A readable, seekable view of what a delta will patch (bad-block-free on MTD)."""
    if dest.kind == "device":
        fd = dest.open_device(os.O_RDONLY | os.O_NONBLOCK)
        try:
            return open_content(fd_path(fd))
        finally:
            os.close(fd)
    return os.fdopen(dest.loc.open(os.O_RDONLY | os.O_NONBLOCK), "rb")
