"""Is a record already in place? The verify pass's answer, so that running a package again
after an interruption (or after it completed) writes only what is not there yet.

Records other than deltas: the record's data, as the verify pass streams it, is compared
with what each selected target holds now; the comparison stops reading the target at the
first difference, so a first install pays one read block per target.
- file-update / file-add: a regular file of the record's size (and mode, when the record
  sets one) whose content is the data;
- file-delete: the target is absent;
- block: the partition (bad-block-free on MTD), block device or staged image starts with
  the data (and the legacy 0xFF fill);
- ubi: the volume starts with the data and holds nothing after it (static volumes: their
  data size; dynamic ones: 0xFF to the end of the data's last LEB, later LEBs unmapped).
Deltas are settled after the pass (deltas.py), when the manifest and the journal are known.
Script records are never "in place": they run again.
"""

import hashlib
import os
import stat

from .. import flash, schema
from ..confine import fd_path
from ..errors import PackageError
from ..flashio import open_current
from ..fsutil import fsync_and_close
from ..text import shown
from ..writers.block import pad_len
from .deltas import IN_PLACE, settle_target

_FILE_OPS = (schema.OP_FILE_UPDATE, schema.OP_FILE_ADD)


class _Compare:
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


class _Known:
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


def comparer(rec, dest):
    """The comparison for one selected target of a record (None: the record kind is never in place)."""
    op = rec.op
    if op == schema.OP_FILE_DELETE:
        return _Known(dest.kind == "absent")
    if op not in _FILE_OPS + (schema.OP_BLOCK, schema.OP_UBI) or dest.kind not in ("file", "device"):
        return None if op in (schema.OP_SCRIPT, schema.OP_FILE_DIFF) else _Known(False)
    try:
        if op in _FILE_OPS or (op == schema.OP_UBI and dest.kind == "file"):  # a staged volume image: whole
            return _file(rec, dest)
        if dest.kind == "device" and op == schema.OP_UBI:
            return _volume(rec, dest)
        return _Compare(open_current(dest), lambda f: True)  # a partition or a staged image: its start
    except OSError:
        return _Known(False)


def _file(rec, dest):
    st = dest.loc.lstat()
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != rec.data_len:
        return _Known(False)
    if rec.mode and (st.st_mode & 0o7777) != (rec.mode & 0o7777):
        return _Known(False)
    f = os.fdopen(dest.loc.open(os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW), "rb")
    return _Compare(f, lambda f: f.read(1) == b"")


def _volume(rec, dest):
    fd = dest.open_device(os.O_RDONLY)
    f = os.fdopen(fd, "rb")
    vol = flash.ubi_volume(fd_path(fd))
    if vol is None or (vol.type == "static" and vol.data_bytes != rec.data_len) or rec.data_len > vol.capacity:
        f.close()
        return _Known(False)
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

    return _Compare(f, nothing_after)


# ---------------------------------------------------------------------------- the apply pass
def to_write(installer, plan, rec, selected, info):
    """The selected targets the apply pass writes: those not in place. Once something has run
    or been written since the verify pass (the begin script, a script record, an earlier
    record: it may have erased or rewritten a target), a target found in place is read again.
    A delta of a package without a manifest has no result hash to read it against: it stays in
    place by the journal's mark unless an earlier record of this run wrote its target."""
    out = []
    for d in selected:
        if plan.in_place(rec.index, d.name) and (not installer.ctx.touched or _still(installer, plan, rec, d, info)):
            continue
        out.append(d)
    return out


def _still(installer, plan, rec, dest, info):
    if rec.op == schema.OP_FILE_DIFF:
        try:
            by_mark = rec.index not in plan.recheck
            verdict, source = settle_target(rec.index, dest, info, installer.state, plan.package_id, by_mark,
                                            patch=plan.patch_of(rec.index))
        except PackageError:
            return False
        if verdict == IN_PLACE:
            return True
        plan.mark(rec.index, dest.name, verdict, source)
        return False
    c = comparer(rec, dest)
    if c is None:
        return False
    try:
        return c.holds(rec.data_len, plan.digest(rec.index), pad_len(rec))
    finally:
        c.close()


def skipped(installer, plan, rec, selected):
    """A record with nothing to write: every selected target in place, or none selected."""
    what = "record %d/%d (%s %s)" % (rec.index + 1, plan.records, rec.op_name, shown(rec.dst))
    if not selected:
        installer.note("%s: no target selected (mask 0), skipped" % what)
        return
    plan.in_place_records += 1
    for d in selected:
        if d.kind == "device":  # written by an interrupted run, maybe only into the page cache
            fsync_and_close(d.open_device(os.O_RDONLY | os.O_NONBLOCK))
        elif d.loc is not None:  # what an interrupted run left beside it goes all the same
            installer.ctx.cleaner.sweep(d.loc.dirfd, d.loc.where)
    installer.note("%s: already in place, nothing written" % what)
    installer.progress.emit("updating", message="already in place")
