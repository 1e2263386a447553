"""Is a record already in place? The verify pass's answer, so that running a package again
after an interruption (or after it completed) writes only what is not there yet.

Records other than deltas: the record's data, as the verify pass streams it, is compared
with what each selected target holds now, as the record's writer says (Writer.comparer,
writers/compare.py). Deltas are settled after the pass (deltas.py), when the manifest and the
journal are known. Script records are never "in place": they run again.
"""

import os

from ..errors import PackageError
from ..fsutil import fsync_and_close
from ..text import shown
from ..writers import for_op
from ..writers.compare import Known
from .deltas import settle_target
from .plan import IN_PLACE


def comparer(rec, dest):
    """The comparison for one selected target of a record, as its writer tells it (None: the
    record kind is never in place)."""
    try:
        return for_op(rec.op).comparer(rec, dest)
    except OSError:
        return Known(False)


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
    writer = for_op(rec.op)
    if writer.delta:
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
        return c.holds(rec.data_len, plan.digest(rec.index), writer.pad(rec))
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
