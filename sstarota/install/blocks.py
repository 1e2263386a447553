"""What ties every later read of a package to the verify pass, byte for byte.

The verify pass reads the (inflated) package stream through a ChainTap, which takes a
running SHA-256 digest at every BLOCK boundary: the digest at the end of block k commits to
blocks 0..k. Every later pass (scripts, apply, dry-run listing) reads the package through a
VerifiedStream, which hands out a block only once its digest matches: a package that
changes between the passes cannot get a byte onto flash or into sh. Memory: one block in
flight, plus 32 bytes of digest per BLOCK of package, whatever the number of records.
"""

from __future__ import annotations

import hashlib
import io

from ..confine import Spool
from ..errors import InstallError
from ..recordclass import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import List, Optional

BLOCK = 128 << 10  # verify granularity: a few of these in flight at once on a 64 MB board


class ChainTap(io.RawIOBase):
    """Pass 1: a readable wrapper that digests everything read through it.

    With hold, it also keeps what is read until spool_to() decides: a Spool (everything read,
    before and after, is written there: the later passes read it instead of inflating the
    package again, and the chain is no longer needed, nor taken) or None (nothing kept). A
    spool that fails to take a write (a full -t) is dropped (spool_error says why) and the
    pass goes on without a spool or a whole chain (chain_lost): the pass must be read again."""

    def __init__(self, stream, hold=False):
        super().__init__()
        self.stream = stream
        self.digests = []
        self.running = hashlib.sha256()
        self.fill = 0
        self.size = 0
        self.held: Optional[List[bytes]] = [] if hold else None
        self.spool: Optional[Spool] = None
        self.spool_error: Optional[str] = None
        self.hashing = True

    def readable(self):
        return True

    def read(self, n=-1):
        data = self.stream.read(n)
        if data:
            if self.hashing:
                self._update(data)
            else:
                self.size += len(data)
            if self.spool is not None:
                self._spool(data)
            elif self.held is not None:
                self.held.append(bytes(data))
        return data

    def spool_to(self, spool):
        """What was held goes to spool (None: is dropped); so does everything read from now on."""
        held, self.held = self.held or [], None
        self.spool = spool
        self.hashing = spool is None
        for data in held:
            if self.spool is not None:
                self._spool(data)

    @property
    def chain_lost(self):
        """The chain was given up for a spool that then failed."""
        return not self.hashing and self.spool is None

    def drop_spool(self, why):
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self.spool_error = why

    def _spool(self, data):
        spool = self.spool
        assert spool is not None
        try:
            spool.write(data)
        except OSError as exc:
            self.drop_spool(exc.strerror or str(exc))

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _update(self, data):
        view = memoryview(data)
        self.size += len(view)
        while view:
            n = min(len(view), BLOCK - self.fill)
            self.running.update(view[:n])
            self.fill += n
            view = view[n:]
            if self.fill == BLOCK:
                self.digests.append(self.running.copy().digest())
                self.fill = 0

    def finish(self):
        """The digests of the whole stream (call once it has been read to its end)."""
        if self.fill:
            self.digests.append(self.running.copy().digest())
            self.fill = 0
        return self.digests


class VerifiedStream(io.RawIOBase):
    """Later passes: the same stream, released block by block once each block checks."""

    def __init__(self, stream, digests, size):
        super().__init__()
        self.stream = stream
        self.digests = digests
        self.size = size
        self.running = hashlib.sha256()
        self.index = 0
        self.buf = b""
        self.off = 0  # next byte of buf to hand out
        self.pos = 0  # stream offset of the first byte of buf

    def readable(self):
        return True

    def _next_block(self):
        want = min(BLOCK, self.size - self.pos - len(self.buf)) if self.index < len(self.digests) else 0
        if want <= 0:
            if self.stream.read(1):
                raise InstallError("the package is longer than when it was verified; stopped")
            return False
        parts = []
        got = 0
        while got < want:
            piece = self.stream.read(want - got)
            if not piece:
                raise InstallError("the package is shorter than when it was verified; stopped")
            parts.append(piece)
            got += len(piece)
        block = b"".join(parts)
        self.running.update(block)
        if self.running.copy().digest() != self.digests[self.index]:
            raise InstallError("the package changed after it was verified (at byte %d); stopped before using it"
                               % (self.index * BLOCK))
        self.index += 1
        self.pos += len(self.buf)
        self.buf = block
        self.off = 0
        return True

    def read(self, n=-1):
        if not self.buf or self.off >= len(self.buf):
            if not self._next_block():
                return b""
        if n is None or n < 0:
            n = len(self.buf) - self.off
        piece = self.buf[self.off:self.off + n]
        self.off += len(piece)
        return piece

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self):
        try:
            self.stream.close()
        finally:
            super().close()
