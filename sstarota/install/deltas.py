"""Deltas after the verify pass: for each selected target, is its result already there, is
there a stash to finish from, or is it the content the delta was made from?

One read of the target answers all three (a file whole; a partition's first bytes, hashed
at each length that matters). In order:
1. the manifest's result hash (new_sha256, new_len) matches: in place;
2. the journal (state.py) names the result this record was putting there and it matches:
   in place (a package without a manifest, interrupted after the rename; with a manifest
   the journal's results count only where they are the manifest's);
3. a package without a manifest whose journal has moved past the record: in place;
4. the journal has a stash of the result whose hash checks out: written from the stash
   (a raw partition interrupted while it was written: neither old nor new);
5. with a manifest, the source hash (old_sha256, old_len) must match, else the package is
   refused as before;
6. without a manifest, the ledger (state.py) of the deltas this board patched: the target
   holds the result recorded on the first run (in place), its source (patched again), or
   neither (refused). A delta the ledger does not know is patched (a first run) only where
   the state directory survives a reboot; elsewhere a re-run could not be told from a
   first run, and the package is refused (exit 3) with the ways out.

Without --state-dir (or state_dir in the board config) the state directory is
sstarota-state under the work directory (-t): a crash is recovered from, a power cut only
when -t is persistent storage; a warning says so for a partition delta.
"""

from __future__ import annotations

import os

from ..errors import PackageError
from ..flashio import open_current
from ..state import PACKAGE_DELTAS, prefix_digests, stash_ok
from ..text import shown
from .plan import APPLY, FROM_STASH, IN_PLACE
from .targets import open_dest
from ..recordclass import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Set

BY_MARK = "by the journal's mark"  # the reason of an IN_PLACE that no hash checked


def _holds(digests, partition, length, sha):
    if partition:
        return digests.get(length) == sha
    return digests[None] == (length, sha)


def settle_target(index, dest, info, state, package, by_mark=True, patch=None):
    """IN_PLACE, FROM_STASH (with the stash path) or APPLY (with, without a manifest, the
    (patch, old length, old sha256) the ledger records) for one selected target. by_mark:
    the journal's completed mark counts (not once something ran that may have changed it)."""
    what = "record %d (file-diff %s)" % (index + 1, shown(dest.name))
    pending = state.pending_for(package, index, dest.name) if state is not None else None
    if pending is not None and info is not None and (pending["sha256"], pending["len"]) != (info.new_sha256,
                                                                                            info.new_len):
        pending = None  # the journal names another result than the manifest does: not used
    known = state.delta_for(patch, dest.name) if info is None and state is not None and patch else None
    lengths = [None]
    if dest.partition:
        lengths = [x for x in (info.new_len if info else None, info.old_len if info else None,
                               pending["len"] if pending else None, known["new"][0] if known else None)
                   if x is not None]
        if info is None:
            lengths.append(None)  # the whole partition: the source the ledger records
    try:
        with open_current(dest) as f:
            digests = prefix_digests(f, lengths)
    except OSError as exc:
        raise PackageError("%s: cannot read the content to patch: %s" % (what, exc.strerror)) from None
    stash = os.path.join(state.path, pending["stash"]) if pending is not None and pending["stash"] else None
    if stash is not None and state.was_writing(package, index) and stash_ok(stash, pending):
        return FROM_STASH, stash  # cut while written: it may read back right and still be unstable
    if info is not None and _holds(digests, dest.partition, info.new_len, info.new_sha256):
        return IN_PLACE, None
    if pending is not None and _holds(digests, dest.partition, pending["len"], pending["sha256"]):
        return IN_PLACE, None
    if info is None and by_mark and state is not None and state.done_by_journal(package, index):
        return IN_PLACE, BY_MARK
    if stash is not None and stash_ok(stash, pending):
        return FROM_STASH, stash
    if info is not None and not _holds(digests, dest.partition, info.old_len, info.old_sha256):
        found, n = digests[None] if None in digests else (digests.get(info.old_len, "-"), digests["read"])
        if not dest.partition:
            found, n = n, found
        raise PackageError("%s: %s is not the content the delta was made from: expected sha256 %s (%d bytes), "
                           "found %s (%d bytes); nor is it the delta's result%s"
                           % (what, shown(dest.name), info.old_sha256, info.old_len, found, n, _no_stash(dest, state)))
    if info is None:
        return _by_ledger(what, dest, digests, state, known, patch)
    return APPLY, None


def _by_ledger(what, dest, digests, state, known, patch):
    """A delta without a manifest: what the ledger knows decides (deltas' rule 6)."""
    n, sha = digests[None]
    if known is not None:
        if _holds(digests, dest.partition, known["new"][0], known["new"][1]):
            return IN_PLACE, None
        if [n, sha] != known["old"]:
            raise PackageError("%s: %s holds neither the content this delta patched when it was installed here "
                               "(sha256 %s, %d bytes) nor its result (sha256 %s, %d bytes): found sha256 %s (%d bytes);"
                               " refused: a delta without a manifest cannot be applied to it (install a full image)"
                               % (what, shown(dest.name), known["old"][1], known["old"][0], known["new"][1],
                                  known["new"][0], sha, n))
    elif state is not None and state.unreadable:
        raise PackageError("%s: the journal in %s is unreadable, and with it the ledger that tells a delta without "
                           "a manifest from its own result; refused: if no delta of this package was applied yet, "
                           "remove %s/journal and run again; else install a full image" % (what, state.path,
                                                                                           state.path))
    elif state is None or state.volatile is not None:
        raise PackageError("%s: a delta without a manifest can be told from its own result on a re-run only by "
                           "a state directory that survives a reboot, and %s is %s; refused: give --state-dir DIR "
                           "on persistent storage (or state_dir in /etc/sstarota/board.conf), or pack with "
                           "--manifest" % (what, state.path if state is not None else "there is none",
                                           state.volatile if state is not None else "given"))
    return APPLY, (patch, n, sha)


def _no_stash(dest, state):
    if dest.partition:
        return ("; a partition interrupted while it was written is finished only from the stash its run kept in "
                "the state directory (%s holds none for it)" % state.path)
    return ""


def settle(installer, plan, state, package):
    """Mark each delta target in the plan; refuse what cannot be settled."""
    infos = plan.manifest.diffs if plan.manifest is not None else {}
    if plan.manifest is None and len(plan.deltas) > PACKAGE_DELTAS:
        raise PackageError("the package has %d deltas and no manifest: the board remembers at most %d of a package's "
                           "(its ledger, state.py); refused: pack it with --manifest" % (len(plan.deltas),
                                                                                      PACKAGE_DELTAS))
    warned: Set[int] = set()
    for index, rec, targets, units, patch in plan.deltas:
        info = infos.get(index)
        placed = 0
        for name, selected in targets:
            if not selected:
                continue
            dest = open_dest(installer.ctx, rec, name)
            try:
                _policy(installer, index, dest, info, state, warned)
                verdict, stash = settle_target(index, dest, info, state, package, patch=patch)
            finally:
                dest.close()
            plan.mark(index, name, verdict, stash)
            if verdict == IN_PLACE:
                plan.units -= units
                placed += 1
        if placed and placed == sum(1 for _, selected in targets if selected):
            plan.to_write -= 1


def _policy(installer, index, dest, info, state, warned):
    """Without a state directory of its own the board keeps the journal and stashes under the
    work directory (-t): a re-run after a crash finishes the update; after a power cut only
    if -t is on persistent storage. Said once, for a partition delta (the one case where an
    interruption can leave an image that is neither old nor new)."""
    if state.volatile is None or not dest.partition or warned:
        return
    warned.add(index)
    installer.warn("the stash of record %d (a delta of the raw partition %s) is kept in %s, %s: a re-run after a "
                   "power cut can finish it only from persistent storage (give --state-dir DIR there, or state_dir "
                   "in the board config)" % (index + 1, shown(dest.name), state.path, state.volatile))
