"""Block digests: what ties the apply pass to the verify pass, byte for byte."""

import hashlib

from ..errors import InstallError

BLOCK = 256 << 10  # verify/write granularity: a few of these in flight at once on a 64 MB board


class BlockDigests:
    """A running SHA-256 over a record's data, its digest taken at every BLOCK boundary.

    The digest at the end of block k commits to blocks 0..k, so pass 2, running the same
    hash, can check each block before releasing it; the final digest is the SHA-256 of the
    whole data (what the manifest lists). One hash pass serves both."""

    def __init__(self):
        self.digests = []
        self.whole = hashlib.sha256()
        self.fill = 0

    def update(self, piece):
        view = memoryview(piece)
        while view:
            n = min(len(view), BLOCK - self.fill)
            self.whole.update(view[:n])
            self.fill += n
            view = view[n:]
            if self.fill == BLOCK:
                self.digests.append(self.whole.copy().digest())
                self.fill = 0

    def finish(self):
        if self.fill:
            self.digests.append(self.whole.copy().digest())
        return self.digests


def verified_blocks(chunks, digests, rec, of):
    """Re-block the pass-2 stream and yield each block only once its digest matches pass 1."""
    buf = bytearray()
    index = 0
    running = hashlib.sha256()

    def check(block):
        nonlocal index
        running.update(block)
        if index >= len(digests) or running.copy().digest() != digests[index]:
            raise InstallError("changed after it was verified (block %d): stopped before writing it" % index,
                               rec, of)
        index += 1
        return block

    for piece in chunks:
        buf += piece
        while len(buf) >= BLOCK:
            block = bytes(buf[:BLOCK])
            del buf[:BLOCK]
            yield check(block)
    if buf:
        yield check(bytes(buf))
    if index != len(digests):
        raise InstallError("shorter than when it was verified", rec, of)
