"""The state directory (--state-dir, or state_dir in the board config): what survives a
power cut so that running the same package again ends with the right system.

    DIR/journal          JSON, replaced atomically (temp file, fsync, rename, fsync DIR):
                         {"package": <sha256 of the package stream>, "completed": <k>,
                          "pending": [{"record": i, "target": name, "sha256": hex, "len": n,
                                       "stash": file name or null}, ...]}
    DIR/stash-<i>-<h>    the complete result of a raw-partition delta, fsynced before the
                         partition is written (i: the record, h: a hash of the target name)

"completed" is a high-water mark: records before it are done (records are applied in
order). It matters for deltas in packages without a manifest (nothing else says whether
a file was already patched); the other kinds are recognised by their content. "pending"
names the result a delta is about to put in place, so that a re-run can tell a target
that already holds it, and finds the stash of a partition that is neither old nor new.
The journal's size does not grow with the package: one entry per target of one record.
A different package starts a new journal and removes the old stashes.
"""

import hashlib
import os
import re

from ..confine import temp_name
from ..errors import UsageError
from ..fsutil import fsync_dir, unlink_quietly

JOURNAL = "journal"
STASH = re.compile(r"^stash-\d+-[0-9a-f]{8}(\.tmp)?$")


class StateDir:
    """The journal of one state directory; nothing is written (or created) until begin()."""

    def __init__(self, path, note=None):
        self.path = path
        self.note = note or (lambda msg: None)
        self.package = None
        self.completed = 0
        self.pending = []
        self.loaded = False
        self.active = False  # begun for a package with deltas: the journal is kept

    def _read(self):
        if self.loaded:
            return
        self.loaded = True
        import json  # only where a journal is read or written

        try:
            with open(os.path.join(self.path, JOURNAL), "rb") as f:
                data = json.loads(f.read(1 << 20).decode("utf-8"))
            package, completed, pending = data["package"], data["completed"], data["pending"]
            if not isinstance(package, str) or not isinstance(completed, int) or not isinstance(pending, list):
                raise ValueError
            self.pending = [_entry(p) for p in pending]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            self.note("the journal in %s is unreadable; starting a new one" % self.path)
            return
        self.package, self.completed = package, completed

    # ------------------------------------------------------------------ what a re-run finds
    def knows(self, package):
        """Is this the package the journal is about?"""
        self._read()
        return self.package == package

    def done_by_journal(self, package, index):
        return self.knows(package) and index < self.completed

    def pending_for(self, package, index, target):
        if not self.knows(package):
            return None
        for p in self.pending:
            if p["record"] == index and p["target"] == target:
                return p
        return None

    def stash_path(self, index, target):
        return os.path.join(self.path, "stash-%d-%s" % (index, hashlib.sha256(target.encode()).hexdigest()[:8]))

    # ------------------------------------------------------------------ the apply pass
    def begin(self, package, deltas=True):
        """The apply pass starts: a different package starts a new journal (old stashes go).
        A package without deltas needs no journal: only stashes left by another go."""
        if not deltas:
            if os.path.isdir(self.path):
                self._clear_stashes(keep=())
            return
        self._read()
        self.active = True
        try:
            os.makedirs(self.path, 0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError("the state directory %s: %s" % (self.path, exc.strerror)) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UsageError("the state directory %s is not writable" % self.path)
        if self.package != package:
            self.package, self.completed, self.pending = package, 0, []
            self._clear_stashes(keep=())
            self._write()
        else:
            self._clear_stashes(keep=[os.path.basename(p["stash"]) for p in self.pending if p["stash"]])

    def expect(self, index, target, sha256, length, stash=None):
        """A delta's result is about to replace target: journal it (and its stash) first. The
        records before this one are complete (records are applied in order): the mark moves."""
        self.pending = [p for p in self.pending if p["record"] == index and p["target"] != target]
        self.pending.append({"record": index, "target": target, "sha256": sha256, "len": length,
                             "stash": os.path.basename(stash) if stash else None})
        self.completed = max(self.completed, index)
        self._write()

    def record_done(self, index):
        """Record index (a delta) is complete. Its stashes go, after a journal that no longer
        names them; without a stash nothing is written (the pending result names it done)."""
        stashes = [p["stash"] for p in self.pending if p["stash"]]
        if not stashes:
            return
        self.completed, self.pending = index + 1, []
        self._write()
        for name in stashes:
            unlink_quietly(os.path.join(self.path, name))

    def drop_if_empty(self):
        """A failed run that completed nothing and stashed nothing: its journal tells a re-run
        nothing, so a fallback state directory goes."""
        if self.active and not self.completed and not self.pending:
            self.finish(0, keep=False)

    def finish(self, records, keep=True):
        """The apply pass succeeded. keep=False (a fallback state directory, a package whose
        deltas the manifest names): a re-run needs no journal, so none is left."""
        if not self.active:
            return
        self._clear_stashes(keep=())
        if not keep:
            unlink_quietly(os.path.join(self.path, JOURNAL))
            try:
                os.rmdir(self.path)
            except OSError:
                pass
            return
        self.completed, self.pending = records, []
        self._write()

    def _clear_stashes(self, keep):
        for name in os.listdir(self.path):
            if STASH.match(name) and name not in keep:
                unlink_quietly(os.path.join(self.path, name))
                self.note("removed %s, left by an interrupted run" % os.path.join(self.path, name))

    def _write(self):
        import json

        data = json.dumps({"package": self.package, "completed": self.completed, "pending": self.pending},
                          sort_keys=True).encode() + b"\n"
        tmp = os.path.join(self.path, temp_name())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(self.path, JOURNAL))
        fsync_dir(self.path)


def _entry(p):
    if not (isinstance(p, dict) and isinstance(p.get("record"), int) and isinstance(p.get("target"), str)
            and isinstance(p.get("sha256"), str) and isinstance(p.get("len"), int)):
        raise ValueError
    stash = p.get("stash")
    if stash is not None and not (isinstance(stash, str) and STASH.match(stash)):
        raise ValueError
    return {"record": p["record"], "target": p["target"], "sha256": p["sha256"], "len": p["len"], "stash": stash}
