"""BSDIFF40 deltas: creation (in-process, bsdiff4) and a streaming bspatch.

The streaming bspatch never holds the old or the new content whole: it reads the three
bzip2 blocks of the patch incrementally from a seekable patch file, reads the old content
by offsets, and writes the new content sequentially. Memory stays at a few MiB whatever the
sizes. Byte-wise addition runs on big integers (SWAR: no carry crosses a byte), so the
work per MiB is a handful of C-level operations.

Patch layout: "BSDIFF40", then three little-endian sign-magnitude 64-bit numbers (length of
the bzip2 control block, length of the bzip2 diff block, size of the new file), then the
control, diff and extra blocks (each bzip2).
"""

import bz2
import os

from .errors import InputError, PackageError

MAGIC = b"BSDIFF40"
HEADER = 32
#: bytes patched per step: the old, diff and new pieces and add_bytes' big integers
#: (about 8 x PIECE together) stay small on a 64 MB board
PIECE = 64 << 10


def offtin(buf):
    """bsdiff's sign-magnitude 64-bit integer."""
    value = int.from_bytes(buf[:8], "little")
    if value & (1 << 63):
        return -(value & ((1 << 63) - 1))
    return value


def read_header(head):
    """(ctrl_len, diff_len, new_size) from the first 32 bytes, or PackageError."""
    if len(head) < HEADER or head[:8] != MAGIC:
        raise PackageError("not a BSDIFF40 patch (bad magic)")
    ctrl_len, diff_len, new_size = offtin(head[8:16]), offtin(head[16:24]), offtin(head[24:32])
    if ctrl_len < 0 or diff_len < 0 or new_size < 0:
        raise PackageError("corrupt BSDIFF40 header (negative length)")
    return ctrl_len, diff_len, new_size


def make_patch(old_path, new_path):
    """A BSDIFF40 patch from old to new (bsdiff4; inputs are read whole, on the host)."""
    import bsdiff4

    return bsdiff4.diff(_read_all(old_path), _read_all(new_path))


def make_patch_pair(pair):
    """make_patch for an (old, new) tuple: the unit of work of parallel dir diffs."""
    return make_patch(*pair)


def _read_all(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError("cannot read %s: %s" % (path, exc.strerror)) from None


class _BzBlock:
    """Incremental reader of one bzip2 block at [offset, offset+length) of a file."""

    def __init__(self, f, offset, length, name):
        self.f = f
        self.pos = offset
        self.left = length
        self.name = name
        self.dec = bz2.BZ2Decompressor()
        self.buf = b""

    def read(self, n):
        out = []
        need = n
        if self.buf:
            piece, self.buf = self.buf[:need], self.buf[need:]
            out.append(piece)
            need -= len(piece)
        while need:
            if self.dec.eof:
                raise PackageError("corrupt patch: the %s block ends early" % self.name)
            if self.dec.needs_input:
                if not self.left:
                    raise PackageError("corrupt patch: the %s block is truncated" % self.name)
                self.f.seek(self.pos)
                data = self.f.read(min(self.left, 1 << 16))
                if not data:
                    raise PackageError("corrupt patch: the file ends inside the %s block" % self.name)
                self.pos += len(data)
                self.left -= len(data)
            else:
                data = b""
            try:
                piece = self.dec.decompress(data, max_length=min(need, PIECE))
            except (OSError, EOFError) as exc:
                raise PackageError("corrupt patch: %s block: %s" % (self.name, exc)) from None
            out.append(piece)
            need -= len(piece)
        return b"".join(out)


_MASKS = {}


def _masks(n):
    m = _MASKS.get(n)
    if m is None:
        m = (int.from_bytes(b"\x7f" * n, "little"), int.from_bytes(b"\x80" * n, "little"))
        if len(_MASKS) < 8:
            _MASKS[n] = m
    return m


def add_bytes(a, b):
    """Byte-wise (a[i] + b[i]) mod 256: the low 7 bits add with no carry out of the byte,
    the top bit is the XOR of both top bits and the carry into it."""
    n = len(a)
    if not n:
        return b""
    low, high = _masks(n)
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "little")


class WrongSource(Exception):
    """The patch reads old content that is not there: it was made from another old file."""


def _read_old(old, old_size, pos, n, strict):
    """n bytes of old content from pos. Outside [0, old_size) stock bspatch reads zeros;
    bsdiff never refers there when given the right old file, so strict mode refuses."""
    if strict and (pos < 0 or pos + n > old_size):
        raise WrongSource("the patch reads old bytes %d..%d, the old content has %d" % (pos, pos + n, old_size))
    if pos >= old_size or pos + n <= 0:
        return bytes(n)
    start = max(pos, 0)
    end = min(pos + n, old_size)
    old.seek(start)
    data = old.read(end - start)
    if len(data) != end - start:
        raise InputError("the old content ended early while patching (expected %d bytes)" % old_size)
    return bytes(start - pos) + data + bytes(pos + n - end)


def patch_stream(old, old_size, patch, out, on_bytes=None, strict=True):
    """Apply the BSDIFF40 patch in the seekable file `patch` to `old` (seekable, old_size
    bytes considered), writing the new content sequentially to `out`. Returns its size.

    strict (the default) raises WrongSource when the patch refers to old bytes beyond
    old_size, which proves the old content is not the one the patch was made from."""
    patch.seek(0)
    ctrl_len, diff_len, new_size = read_header(patch.read(HEADER))
    patch.seek(0, os.SEEK_END)
    patch_size = patch.tell()
    if HEADER + ctrl_len + diff_len > patch_size:
        raise PackageError("corrupt patch: block lengths exceed the patch size")
    ctrl = _BzBlock(patch, HEADER, ctrl_len, "control")
    diff = _BzBlock(patch, HEADER + ctrl_len, diff_len, "diff")
    extra = _BzBlock(patch, HEADER + ctrl_len + diff_len, patch_size - HEADER - ctrl_len - diff_len, "extra")
    new_pos = 0
    old_pos = 0
    while new_pos < new_size:
        triple = ctrl.read(24)
        add_len, copy_len, seek = offtin(triple[0:8]), offtin(triple[8:16]), offtin(triple[16:24])
        if add_len < 0 or copy_len < 0 or new_pos + add_len > new_size:
            raise PackageError("corrupt patch: a control entry runs past the new size")
        left = add_len
        while left:
            n = min(left, PIECE)
            out.write(add_bytes(diff.read(n), _read_old(old, old_size, old_pos, n, strict)))
            old_pos += n
            new_pos += n
            left -= n
        if new_pos + copy_len > new_size:
            raise PackageError("corrupt patch: a control entry runs past the new size")
        left = copy_len
        while left:
            n = min(left, PIECE)
            out.write(extra.read(n))
            new_pos += n
            left -= n
        old_pos += seek
        if on_bytes:
            on_bytes(new_pos, new_size)
    return new_size


def patch_new_size(head):
    """The new size a patch declares (from its first 32 bytes)."""
    return read_header(head)[2]

