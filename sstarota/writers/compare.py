"""Is a record already in place? The comparisons the writers offer the verify pass
(Writer.comparer; install/inplace.py runs them), so that running a package again after an
interruption (or after it completed) writes only what is not there yet.

The record's data, as the verify pass streams it, is compared with what each selected target
holds now; the comparison stops reading the target at the first difference, so a first
install pays one read block per target.
- file-update / file-add: a regular file of the record's size (and mode, when the record
  sets one) whose content is the data (files.py);
- file-delete: the target is absent (files.py);
- block: the partition (bad-block-free on MTD), block device or staged image starts with
  the data (and the legacy 0xFF fill) (block.py);
- ubi: the volume starts with the data and holds nothing after it (static volumes: their
  data size; dynamic ones: 0xFF to the end of the data's last LEB, later LEBs unmapped);
  a staged volume image: the whole file (ubi.py).
Deltas are settled after the pass (install/deltas.py), when the manifest and the journal are
known. Script records are never "in place": they run again.
"""

import hashlib
import os
import stat


class Compare:
    """Feeds of the record's data against a readable target; same stays True while equal."""

    def __init__(self, f, finish):
        self.f = f
        self.same = True
        self._finish = finish

    def feed(self, piece):
        if not self.same:
            return
        try:
            got = self.f.read(len(piece))
        except OSError:
            got = None
        if got is None or piece != got:
            self.close(False)

    def finish(self, pad):
        """True when the target holds the data (then pad bytes of 0xFF, then what finish wants)."""
        try:
            while self.same and pad:
                n = min(pad, 1 << 17)
                if self.f.read(n) != b"\xff" * n:
                    self.same = False
                pad -= n
            if self.same:
                self.same = bool(self._finish(self.f))
        except OSError:
            self.same = False
        self.close(self.same)
        return self.same

    def close(self, same=None):
        if same is not None:
            self.same = same
        if self.f is not None:
            self.f.close()
            self.f = None

    def holds(self, n, digest, pad):
        """Apply pass: the target's first n bytes hash to digest (8 bytes of a SHA-256), then finish."""
        h = hashlib.sha256()
        try:
            while n:
                piece = self.f.read(min(n, 1 << 17))
                if not piece:
                    break
                h.update(piece)
                n -= len(piece)
        except OSError:
            n = -1
        if n or h.digest()[:8] != digest:
            self.close(False)
            return False
        return self.finish(pad)


class Known:
    """A verdict known before the data is read (a deleted file, a target of another size)."""

    def __init__(self, same):
        self.same = same

    def feed(self, piece):
        pass

    def finish(self, pad):
        return self.same

    def close(self, same=None):
        pass

    def holds(self, n, digest, pad):
        return self.same


def whole_file(rec, dest):
    """A regular file whose whole content (and mode, when the record sets one) is the data."""
    st = dest.loc.lstat()
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != rec.data_len:
        return Known(False)
    if rec.mode and (st.st_mode & 0o7777) != (rec.mode & 0o7777):
        return Known(False)
    f = os.fdopen(dest.loc.open(os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW), "rb")
    return Compare(f, lambda f: f.read(1) == b"")
