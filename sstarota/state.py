"""The state directory (--state-dir, or state_dir in the board config): what survives a
power cut so that running the same package again ends with the right system.

    DIR/journal          JSON, replaced atomically (temp file, fsync, rename, fsync DIR):
                         {"package": <the package's identity>, "completed": <k>,
                          "writing": <the device record being written, or null>,
                          "pending": [{"record": i, "target": key, "sha256": hex, "len": n,
                                       "stash": file name or null}, ...],
                          "deltas": [{"patch": hex, "target": key, "old": [n, hex],
                                      "new": [n, hex]}, ...]}
    DIR/stash-<i>-<h>    the complete result of a raw-partition delta, fsynced before the
                         partition is written (i: the record, from 1; h: the target's key)

A target is named by its key: the first 16 hex digits of the SHA-256 of its name's bytes
(any bytes: a name that is not UTF-8 names a key like any other).

The package's identity is the SHA-256 over its verify blocks, with the root it is
installed into and whether mask-0 targets are written. "completed" is a high-water mark:
records before it are done (records are applied in order); it matters for deltas in
packages without a manifest (nothing else says whether a file was already patched).
"writing" names the partition or volume record a power cut may have interrupted: NAND
pages cut mid-program can read back right and fail later, so that record is written again
even when it reads as in place. "pending" names the result a delta is about to put in
place, so that a re-run can tell a target that already holds it, and finds the stash of a
partition that is neither old nor new. The journal's size does not grow with the package.
A different package resets the journal and removes the old stashes.

"deltas" is the ledger of the deltas this board patched without a manifest (a vendor
package carries no hash of a delta's source or result): for each, the patch's SHA-256,
the target, and the hashes of the content it patched and of the result, recorded before
the result replaces anything and kept across packages (the last LEDGER of them). A
re-run, with any work directory, finds the target holding the result (in place), the
source (patched again) or neither (refused): without it a re-run could patch a result a
second time. It is why such a package needs a state directory on persistent storage.

The directory must be ours: a directory (not a symlink), owned by this user, writable by
no one else; its files are opened without following symlinks. One install at a time holds
it (an exclusive flock on the directory, from before the verify pass to the end): a second
otaunpack on the same state directory is refused, not interleaved with the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat

from .confine import temp_name
from .errors import InstallError, UsageError
from .fsutil import create_new, fsync_dir, open_regular, unlink_quietly
from .recordclass import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Dict, Tuple, Union

JOURNAL = "journal"
STASH = re.compile(r"^stash-\d+-[0-9a-f]{8}(\.tmp)?$")
OURS = (JOURNAL, "otaunpack.lock")
MAX_JOURNAL = 4 << 20
LEDGER = 4096  # deltas remembered, about 200 bytes each in the journal
PACKAGE_DELTAS = LEDGER // 4  # a package without a manifest may have at most this many: its own never pushed out
LOCK = "otaunpack.lock"
KEY = re.compile(r"^[0-9a-f]{16}$")
HEX = re.compile(r"^[0-9a-f]{64}$")
READ = 128 << 10  # a read when hashing a target or a stash


def ours(path):
    """A directory (not a symlink) of this user's that only it can write."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def target_key(name):
    """The journal's name for a target: its bytes hashed (any bytes, UTF-8 or not)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class StateDir:
    """The journal of one state directory; nothing is written (or created) until begin()."""

    def __init__(self, path, note=None):
        self.path = path
        self.note = note or (lambda msg: None)
        self.package = None
        self.completed = 0
        self.writing = None
        self.pending = []
        self.ledger = []  # {"patch", "target", "old", "new"}: the deltas patched without a manifest
        self.loaded = False
        self.active = False  # begun for a package that needs the journal
        self.volatile = None  # why a reboot may lose the directory (the installer's word), or None
        self.unreadable = False  # a journal was there and could not be read: its ledger is lost
        self.root = None  # under --root: the directory must stay inside it (its real path)
        self._lock = None  # the fd of DIR/otaunpack.lock while this install holds it

    def lock(self):
        """Hold the directory for this install (if it is there yet: begin() takes it once it is
        made), by an exclusive flock on DIR/otaunpack.lock (mode 0600: no other user can open
        it to hold it). Another install holding it: UsageError."""
        if self._lock is not None or not ours(self.path):
            return
        try:
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # a state directory that cannot be written: begin() says so when it matters
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError("another otaunpack is installing with the state directory %s; nothing written (run "
                             "again once it has finished)" % self.path) from None
        self._lock = fd

    def unlock(self):
        fd = self._lock
        if fd is not None:
            self._lock = None
            os.close(fd)

    def _read(self):
        if self.loaded:
            return
        self.loaded = True
        import json  # only where a journal is read or written

        if os.path.lexists(self.path) and not ours(self.path):
            return  # another user's: never read (begin() refuses it where a journal is needed)
        try:
            with open_regular(os.path.join(self.path, JOURNAL)) as f:
                data = json.loads(f.read(MAX_JOURNAL).decode("utf-8"))
            package, completed, writing = data["package"], data["completed"], data.get("writing")
            if not (package is None or isinstance(package, str)) or not isinstance(completed, int) or not isinstance(data["pending"], list) \
                    or not (writing is None or isinstance(writing, int)):
                raise ValueError
            self.pending = [_entry(p) for p in data["pending"]]
            self.ledger = [_delta(d) for d in data.get("deltas", [])][-LEDGER:]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            self.note("the journal in %s is unreadable; not using it" % self.path)
            self.pending, self.ledger = [], []
            self.unreadable = True
            return
        self.package, self.completed, self.writing = package, completed, writing

    # ------------------------------------------------------------------ what a re-run finds
    def knows(self, package):
        """Is this the package the journal is about?"""
        self._read()
        return self.package == package

    def done_by_journal(self, package, index):
        return self.knows(package) and index < self.completed

    def was_writing(self, package, index):
        return self.knows(package) and self.writing == index

    def pending_for(self, package, index, target):
        if not self.knows(package):
            return None
        key = target_key(target)
        for p in self.pending:
            if p["record"] == index and p["target"] == key:
                return p
        return None

    def delta_for(self, patch, target):
        """What the ledger knows of this patch on this target: {"old": [n, hex], "new": [n, hex]}."""
        self._read()
        key = target_key(target)
        for d in self.ledger:
            if d["patch"] == patch and d["target"] == key:
                return d
        return None

    def stash_path(self, index, target):
        return os.path.join(self.path, "stash-%d-%s" % (index + 1, target_key(target)[:8]))

    # ------------------------------------------------------------------ the apply pass
    def begin(self, package, needed=True):
        """The apply pass starts. A different package resets the journal (old stashes go); a
        package that needs no journal (no delta, no partition) only clears another's."""
        if not needed:  # whatever the journal says is about another package (or none)
            self._forget_package()
            return
        try:
            os.makedirs(self.path, 0o700, exist_ok=True)
            self._check_ours()
            self._check_inside()
            self.lock()
            self._read()
            self.active = True
            if self.package != package:
                self.package, self.completed, self.writing, self.pending = package, 0, None, []
                self._clear_stashes(keep=())
                self._write(UsageError)
            else:
                self._clear_stashes(keep=[p["stash"] for p in self.pending if p["stash"]])
        except OSError as exc:
            raise UsageError("the state directory %s: %s; nothing written (give --state-dir DIR on a writable "
                             "filesystem)" % (self.path, exc.strerror)) from None

    def _check_inside(self):
        """Under --root: the directory reached is still inside the root (a component swapped for
        a symlink since the run began would take the journal and stashes out of it)."""
        if self.root is None:
            return
        real = os.path.realpath(self.path)
        if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
            raise UsageError("the state directory %s leads out of the root (to %s); refused" % (self.path, real))

    def mark(self, index):
        """Record index is complete (a package whose deltas have no manifest: the journal's mark
        says so after every record, so that a later record rewriting a delta's target does not
        leave the delta neither old nor new for a re-run)."""
        if self.active and self.completed < index + 1:
            self.completed = index + 1
            self._write()

    def _forget_package(self):
        """A package that needs no journal: another package's stashes and marks go; the ledger
        of deltas stays. A state directory that cannot be changed (a filesystem gone
        read-only) does not stop such a package: noted, not fatal."""
        try:
            if not os.path.lexists(self.path):
                return
            self._check_ours()
            self._clear_stashes(keep=())
            self._read()
            if self.ledger:
                if self.package is not None or self.pending or self.writing is not None:
                    self.package, self.completed, self.writing, self.pending = None, 0, None, []
                    self._write(UsageError)
            else:
                unlink_quietly(os.path.join(self.path, JOURNAL))
        except OSError as exc:
            self.note("the state directory %s: %s; left as it is (this package needs no journal)"
                      % (self.path, exc.strerror))
        except UsageError as exc:
            self.note("%s; left as it is (this package needs no journal)" % exc)

    def _check_ours(self):
        if not ours(self.path):
            st = os.lstat(self.path)
            raise UsageError("the state directory %s is not a directory of this user's that only it can write "
                             "(owner %d, mode %04o); refused: remove it, or give --state-dir DIR"
                             % (self.path, st.st_uid, stat.S_IMODE(st.st_mode)))

    def write_device(self, index):
        """A partition or volume record is about to be written: a re-run writes it again."""
        if self.active and self.writing != index:
            self.writing = index
            self._write()

    def device_done(self, index):
        """The partition or volume record is written and synced: a re-run need not write it again."""
        if self.active and self.writing == index:
            self.writing = None
            self._write()

    def expect(self, index, target, sha256, length, stash=None, source=None):
        """A delta's result is about to replace target: journal it (and its stash) first. The
        records before this one are complete (records are applied in order): the mark moves.
        source: (patch hex, old length, old hex) of a delta without a manifest: the ledger."""
        key = target_key(target)
        self.pending = [p for p in self.pending if p["record"] == index and p["target"] != key]
        self.pending.append({"record": index, "target": key, "sha256": sha256, "len": length,
                             "stash": os.path.basename(stash) if stash else None})
        self.completed = max(self.completed, index)
        if source is not None:
            patch, old_len, old_sha = source
            self.ledger = [d for d in self.ledger if not (d["patch"] == patch and d["target"] == key)]
            self.ledger.append({"patch": patch, "target": key, "old": [old_len, old_sha], "new": [length, sha256]})
            self.ledger = self.ledger[-LEDGER:]
        self._write()

    def record_done(self, index):
        """Record index (a delta) is complete. Its stashes go, after a journal that no longer
        names them; without a stash nothing is written (the pending result names it done)."""
        stashes = [p["stash"] for p in self.pending if p["stash"]]
        if not stashes:
            return
        self.completed, self.pending = index + 1, []
        self.writing = None if self.writing == index else self.writing
        self._write()
        for name in stashes:
            unlink_quietly(os.path.join(self.path, name))

    def drop_if_empty(self):
        """A failed run that completed nothing and stashed nothing: its journal tells a re-run
        nothing, so a fallback state directory goes."""
        if self.active and not self.completed and not self.pending and self.writing is None:
            self.finish(0, keep=False)

    def finish(self, records, keep=True):
        """The apply pass succeeded. keep=False (a fallback state directory, a package whose
        deltas the manifest names): a re-run needs no journal, so none is left."""
        if not self.active:
            return
        self._clear_stashes(keep=())
        if not keep and not self.ledger:
            unlink_quietly(os.path.join(self.path, JOURNAL))
            try:
                os.rmdir(self.path)
            except OSError:
                pass
            return
        if not keep:
            self.package, records = None, 0
        self.completed, self.writing, self.pending = records, None, []
        self._write()

    def _clear_stashes(self, keep):
        for name in sorted(os.listdir(self.path)):
            if STASH.match(name) and name not in keep and name not in OURS:
                unlink_quietly(os.path.join(self.path, name))
                self.note("removed %s, left by an interrupted run" % os.path.join(self.path, name))

    def _write(self, error=InstallError):
        import json

        self._check_inside()
        data = json.dumps({"package": self.package, "completed": self.completed, "writing": self.writing,
                           "pending": self.pending, "deltas": self.ledger}, sort_keys=True).encode() + b"\n"
        tmp = os.path.join(self.path, temp_name())
        try:
            with create_new(tmp) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.path, JOURNAL))
        except OSError as exc:
            unlink_quietly(tmp)
            raise error("cannot write the journal in the state directory %s: %s" % (self.path, exc.strerror)) \
                from None
        fsync_dir(self.path)


def _entry(p):
    if not (isinstance(p, dict) and isinstance(p.get("record"), int) and isinstance(p.get("target"), str)
            and KEY.match(p["target"]) and isinstance(p.get("sha256"), str) and isinstance(p.get("len"), int)):
        raise ValueError
    stash = p.get("stash")
    if stash is not None and not (isinstance(stash, str) and STASH.match(stash)):
        raise ValueError
    return {"record": p["record"], "target": p["target"], "sha256": p["sha256"], "len": p["len"], "stash": stash}


def _digest(v):
    if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and v[0] >= 0 and isinstance(v[1], str)
            and HEX.match(v[1])):
        raise ValueError
    return [v[0], v[1]]


def _delta(d):
    if not (isinstance(d, dict) and isinstance(d.get("patch"), str) and HEX.match(d["patch"])
            and isinstance(d.get("target"), str) and KEY.match(d["target"])):
        raise ValueError
    return {"patch": d["patch"], "target": d["target"], "old": _digest(d.get("old")), "new": _digest(d.get("new"))}


def prefix_digests(f, lengths):
    """{length: sha256 hex of the first length bytes} for the lengths f holds, and under
    None (size, sha256 hex) of the whole; one read."""
    h = hashlib.sha256()
    n = 0
    out: Dict[Union[int, str, None], Union[str, int, Tuple[int, str]]] = {}  # also "read": the bytes read
    marks = sorted(set(x for x in lengths if x is not None))
    limit = None if None in lengths else (marks[-1] if marks else 0)
    while limit is None or n < limit:
        step = READ
        ahead = [m for m in marks if m > n]
        if ahead:
            step = min(step, ahead[0] - n)
        piece = f.read(step if limit is None else min(step, limit - n))
        if not piece:
            break
        h.update(piece)
        n += len(piece)
        if n in marks:
            out[n] = h.copy().hexdigest()
    if 0 in marks:
        out[0] = hashlib.sha256().hexdigest()
    if None in lengths:
        out[None] = (n, h.hexdigest())
    out["read"] = n
    return out


def stash_ok(path, pending):
    """The stash exists, has the journaled length and hash."""
    try:
        with open_regular(path) as f:
            d = prefix_digests(f, [None])[None]
    except OSError:
        return False
    return d == (pending["len"], pending["sha256"])
