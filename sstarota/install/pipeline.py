"""The installer pipeline: verify pass -> begin script -> apply pass -> end script.

Pass 1 reads the whole package front to back (gzip inflated in-process) and checks every
checksum, count, length and target (each target for its kind: see targets.open_dest), and
that the stream ends exactly after the last record. Nothing is written and no script runs
before it has succeeded. Every later read of the package (the scripts, the apply pass, the
dry-run listing) reads exactly what pass 1 checked, one of two ways:

- where the work directory (-t) is in RAM (a tmpfs) and has room for the inflated package
  within the memory available (SPOOL_MEMORY_RESERVE left, half at most), pass 1 writes what
  it inflates to a spool there, a file of ours in the private work directory, and the later
  passes read it: one inflate and one SHA-256 pass (the records' digests), no block chain;
- otherwise (-t on storage, no room, a raw package, --two-pass, a URL with --no-spool) they
  read the package again through the pass-1 block digests (blocks.py): a package that
  changes between the passes cannot get a byte onto flash or into sh.

A note says which was used, and the final progress event's summary counts the reads of the
package (package_reads).

Memory does not grow with the number of records or the size of scripts: records are not
kept between the passes (the plan holds totals), the begin and end scripts and script
records are spooled under the work directory (-t) and run from there.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

from .. import delta, manifest, slots
from ..confine import Root, Spool, StaleCleaner, TargetProblem
from ..errors import InstallError, OtaError, PackageError
from ..fsutil import mem_available, ram_fs
from ..package import PackageReader
from ..progress import Progress
from ..recordclass import TYPE_CHECKING, dataclass
from ..state import StateDir, ours
from ..text import shown
from ..writers import Context, for_op
from . import deltas
from .blocks import ChainTap, VerifiedStream
from .inplace import comparer, skipped, to_write
from .plan import FROM_STASH, IN_PLACE, Plan, plan_line
from .targets import Dest, Named, check_capacity, open_dest, patch_new_size
from .policy import Policy, _inside
from .scripts import Scripts
from .trust import ManifestCheck

if TYPE_CHECKING:
    from typing import Callable, Optional, Union

WRITE_UNITS = 4096  # progress units for committing one target
STATE_DIR = "/var/lib/sstarota"  # the state directory when the board names none (inside --root)
STATE_UNDER_TMP = "sstarota-state"  # ... and when that is not writable persistent storage either
#: the end of a package's journal name made from its record digests (plan.ident); a name made
#: from the block chain, by an otaunpack before them, has none
ID_BY_RECORDS = " by=records"
SPOOL_SPARE = 4 << 20  # what the inflated package's spool leaves free under -t (the scripts, patches)
#: ... and of the memory available (the rest of the install, the flash's page cache, the board's
#: own processes): on the 64 MB test board, whose 28 MB available shrink to about 20 once the
#: installer is loaded, an 8 MiB spool brought the OOM killer; a spool never takes over half either
SPOOL_MEMORY_RESERVE = 24 << 20


@dataclass
class Options:
    root: Optional[str] = None
    tmpdir: Optional[str] = None  # the work directory (the CLI's: a private one made under -t)
    work_parent: Optional[str] = None  # -t itself, when tmpdir is a private directory made in it
    run_scripts: bool = True
    all_targets: bool = False
    dry_run: bool = False
    allow_devices: bool = False
    ignore_script_errors: bool = False
    listing: Optional[Callable[[str], None]] = None  # dry run: where the plan's lines go
    policy: Optional[Policy] = None  # the board's (policy.py); None: no keys, no checks
    spool: bool = True  # one inflate: the verify pass spools the inflated package under -t where it fits


class Installer:
    """One update from a package source (sources.py): verify, begin script, apply, end script."""

    def __init__(self, source, options=None, progress=None, note=None):
        self.source = source
        self.opts = options or Options()
        self.progress = progress or Progress()
        self.note = note or (lambda msg: None)
        tmpdir = self.opts.tmpdir or tempfile.gettempdir()
        self.ctx = Context(root=self.opts.root, tmpdir=tmpdir, run_scripts=self.opts.run_scripts, note=self.note,
                           progress=self.progress, fsroot=Root(self.opts.root), allow_devices=self.opts.allow_devices,
                           cleaner=StaleCleaner(self.note), ignore_script_errors=self.opts.ignore_script_errors)
        self.script_units = 4096
        self.policy = self.opts.policy or Policy()
        self.state = self._state_dir(tmpdir)
        self.state_fallback = self.state.volatile is not None and not self.policy.state_dir  # under -t
        self.ctx.state = self.state
        # A/B slots (slots.py): the board's slot table, never under --root (a staging tree)
        table = None if self.opts.root else slots.load_table()
        self.slots = slots.Slots(table, self.state.path, self.note) if table is not None else None
        self.spool: Optional[Spool] = None  # the inflated package, when the verify pass spooled it
        self.spool_note: Optional[str] = None  # which it was, and why: said once the package is verified

    def _state_dir(self, tmpdir):
        """The board's (--state-dir, state_dir in the config), else STATE_DIR where it can be made
        on storage that survives a reboot, else one under the work directory (-t), which a
        re-run after a reboot may not find (volatile: why, for messages)."""
        if self.policy.state_dir:
            state = StateDir(self.policy.state_dir, self.note)
            ram = ram_fs(state.path)
            state.volatile = "on %s, lost at a reboot" % ram if ram else None
            return state
        path = _inside(self.opts.root, STATE_DIR) if self.opts.root else STATE_DIR
        if ram_fs(path) is None and _can_make(path):
            state = StateDir(path, self.note)
            if self.opts.root:  # the root's own: it must stay inside it
                state.root = os.path.realpath(self.opts.root)
            return state
        state = StateDir(os.path.join(self.opts.work_parent or tmpdir, STATE_UNDER_TMP), self.note)
        if os.path.lexists(state.path) and not ours(state.path):  # another user's (made first to block us, or to redirect the journal)
            self.note("%s is not a directory of this user's; the state directory is %s/%s for this run"
                      % (state.path, tmpdir, STATE_UNDER_TMP))
            state = StateDir(os.path.join(tmpdir, STATE_UNDER_TMP), self.note)
        ram = ram_fs(state.path)
        state.volatile = "on %s, lost at a reboot" % ram if ram else "under the work directory (-t)"
        return state

    def warn(self, msg):
        self.progress.warn(msg)

    # ------------------------------------------------------------------ pass 1
    def verify(self):
        """Read the whole package, check everything, and return the Plan (nothing written).

        A board with keys opens no target before the signature is checked: a first pass
        checks the package and its signature alone, a second (through the first one's block
        digests) the targets (opening a device node can act: /dev/watchdog arms).

        Where the inflated package is spooled (one inflate) and -t then has no room left for
        the work files the apply pass needs, or a journal left by an interrupted run names the
        package as the block chain did (an otaunpack before the record digests named it), the
        spool is dropped and the package verified again, read twice: the same result, no spool."""
        keyed = bool(self.policy.key_paths) or self.policy.require_signature
        self.policy.prepare()
        spool = self.opts.spool and getattr(self.source, "inflates", False)
        while True:
            plan = self._verify_once(keyed, spool)
            why = None
            if self.spool is not None and self._chain_named_journal(plan):
                why = "the journal of an interrupted run names the package by its block digests"
            else:
                try:
                    self._check_room(plan)
                    if self.spool_note:
                        self.note(self.spool_note)
                    return plan
                except PackageError:
                    if self.spool is None:
                        raise
                    why = "-t needs the room for the package's work files"
            self._drop_spool("two reads of the package: %s" % why)
            spool = False

    def _verify_once(self, keyed, spool):
        plan, lost = self._first_pass(keyed, spool)
        if lost:  # the spool failed after the block chain was given up for it: read it all again
            plan, _ = self._first_pass(keyed, spool=False)
        self.policy.check(plan.manifest, self.note)
        if keyed:
            first = plan
            try:
                stream, _ = self._verified_reader(first)
                with stream:
                    plan = self._verify_pass(stream, targets=True, checksums=False)
            except InstallError as exc:  # the package changed between the two reads: nothing written
                raise PackageError(str(exc)) from None
            plan.digests, plan.stream_size = first.digests, first.stream_size
        if plan.problem is not None:
            raise plan.problem
        if self.slots is not None and self.slots.expect:  # a slot to write: never the one a trial falls back to
            self.slots.keep_fallback()
        where = " root=%s all-targets=%d" % (os.path.realpath(self.opts.root or "/"), self.opts.all_targets)
        plan.package_id = plan.ident.hexdigest() + where + ID_BY_RECORDS
        if self.spool is None and plan.digests and not self.state.knows(plan.package_id):
            chained = hashlib.sha256(b"".join(plan.digests) + b"%d" % plan.stream_size).hexdigest() + where
            if self.state.knows(chained):  # an interrupted run's journal, from before the record digests
                plan.package_id = chained
        if plan.needs_journal() and self.state.knows(plan.package_id) and self.state.writing is not None:
            plan.unsettle(self.state.writing)  # cut while being written: written again (state.py)
        deltas.settle(self, plan, self.state, plan.package_id)
        return plan

    def _drop_spool(self, note=None):
        """The spool closed (its file removed, its memory back); note: why, for spool_note."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if note is not None:
            self.spool_note = note

    def _chain_named_journal(self, plan):
        """Does the state directory hold an unfinished journal that names a package by the block
        chain (an otaunpack before the record digests; a spooled pass does not take the chain)?"""
        st = self.state
        unfinished = st.package is not None and (st.writing is not None or bool(st.pending))
        return unfinished and not st.package.endswith(ID_BY_RECORDS)

    def _spool_for(self, size):
        """A spool under -t for the inflated package of size bytes, when -t is in RAM (a
        board's /tmp: a tmpfs) and it fits: the free space less SPOOL_SPARE, and the memory
        available less SPOOL_MEMORY_RESERVE (and half of it at most), so that what the spool
        takes cannot bring the board's OOM killer.
        Otherwise the package is read twice: on storage (flash) a copy of the package would
        cost more than a second inflate, and wear it. spool_note says which."""
        where = self.ctx.tmpdir
        free, _ = _free(where)
        ram = ram_fs(where)
        avail = mem_available() if ram else None
        if ram is None:
            why = "-t %s is not in RAM (a tmpfs): a copy there would be written to storage" % where
        elif avail is None:
            why = "the memory available is not known (/proc/meminfo has no MemAvailable)"
        elif free is not None and free < size + SPOOL_SPARE:
            why = "-t %s has %d bytes free" % (where, free)
        elif size > avail - SPOOL_MEMORY_RESERVE or size > avail // 2:
            why = "-t %s is on %s and the board has %d bytes of memory available" % (where, ram, avail)
        else:
            try:
                self.spool = Spool(where, "spool")
            except OSError as exc:
                why = "cannot make a file in -t %s: %s" % (where, exc.strerror or exc)
            else:
                self.spool_note = "one inflate: the inflated package (%d bytes) is spooled under %s" % (size, where)
                return self.spool
        self.spool_note = "two reads of the package: its inflated %d bytes do not fit: %s" % (size, why)
        return None

    def _first_pass(self, keyed, spool):
        """The verify pass from the source, through a ChainTap (spooling where it fits); returns
        (plan, lost): lost when a spool failed after the block chain was given up for it."""
        with self.source.stream() as stream:
            tap = ChainTap(stream, hold=spool)
            try:
                plan = self._verify_pass(tap, targets=not keyed, passes=2 if keyed else 1)
                if self.spool is not None and tap.spool is not None:
                    try:
                        self.spool.rewind()  # flushed: what the later passes read
                    except OSError as exc:
                        tap.drop_spool(exc.strerror or str(exc))
            finally:
                if tap.held is not None:  # the pass ended before the header was read
                    tap.spool_to(None)
                if self.spool is not None and tap.spool is None:
                    self._drop_spool("two reads of the package: spooling it under %s failed: %s"
                                     % (self.ctx.tmpdir, tap.spool_error))
            plan.digests = tap.finish()
            plan.stream_size = tap.size
        return plan, tap.chain_lost

    def _check_room(self, plan):
        """The work directory (-t) and the state directory hold what the apply pass will put
        there (the scripts, the largest patch or script record, the largest stash): found
        now, not half-way through the writes."""
        work = plan.begin_len + plan.end_len
        stash = 0
        for index, spooled, stashed in plan.room:
            if index < len(plan.status) and plan.status[index] == 1:
                continue  # in place: not spooled
            work, stash = max(work, plan.begin_len + plan.end_len + spooled), max(stash, stashed)
        (work_free, work_fs), (state_free, state_fs) = _free(self.ctx.tmpdir), _free(self.state.path)
        shared = stash if work_fs == state_fs else 0  # one filesystem holds both
        for path, free, need, what in ((self.ctx.tmpdir, work_free, work + shared, "-t"),
                                       (self.state.path, state_free, stash, "the state directory")):
            if need and free is not None and free < need + (1 << 20):
                raise PackageError("%s %s has %d bytes free; this package needs %d there (its scripts, patches and "
                                   "the largest delta result); nothing written: give a directory with room"
                                   % (what, path, free, need + (1 << 20)))

    def _verify_pass(self, stream, targets, passes=0, checksums=True):
        """One read of the package: every record checked; with targets, each target too (and
        what is in place). passes: the first pass sets the progress total for that many."""
        p = self.progress
        plan = Plan(self.source.name)
        self._targets = targets
        reader = PackageReader(stream, os.path.basename(self.source.name), strict=True, checksums=checksums)
        header = reader.open()
        total = header.package_size()
        plan.ident.update(hashlib.sha256(header.raw).digest() + hashlib.sha256(reader.begin_script).digest()
                          + hashlib.sha256(reader.end_script).digest())
        if isinstance(stream, ChainTap) and stream.held is not None:
            stream.spool_to(self._spool_for(total))
        if passes:
            self.script_units = max(4096, (total + header.total_data) // 100)
            # a first estimate: verify every byte, write every data byte, run the scripts
            p.set_total(total * passes + header.total_data + self.script_units * 2)
        p.add(reader.offset)
        self._seen = reader.offset
        p.emit("verifying", records=header.record_count)
        check = None
        for rec, chunks in reader.records():
            check = self._verify_record(plan, reader, rec, chunks) or check
        reader.finish()
        plan.ident.update(b"%d" % reader.offset)
        p.add(reader.offset - self._seen)
        plan.generation = header.generation
        plan.records = header.record_count
        plan.package_bytes = reader.offset
        plan.begin_len, plan.end_len = len(reader.begin_script), len(reader.end_script)
        if check is not None:
            plan.manifest = check.finish(reader)
        else:
            plan.manifest_index = None
        return plan

    def _verify_record(self, plan, reader, rec, chunks):
        """Check one record's targets and read its data; returns the ManifestCheck of a manifest."""
        p = self.progress
        p.emit("verifying", record=rec.index + 1, records=reader.header.record_count, target=rec.dst,
               label=rec.label)
        last = rec.index == reader.header.record_count - 1
        check = self._manifest_check(plan, reader, rec, last)  # read here, never run: no target, no script limit
        writer = for_op(rec.op)
        try:
            dests = self._dests(rec) if check is None and self._targets else []
        except TargetProblem as exc:
            # integrity first: a corrupt package is named as such, not by the target it garbles
            plan.problem = plan.problem or exc
            dests = []
        selected = [d for d, sel in dests if sel]
        comps = []
        try:
            comps = [(d.name, c) for d, c in ((d, comparer(rec, d)) for d in selected) if c is not None]
            feeds = [c.feed for _, c in comps] + ([check.feed] if check is not None else [])
            whole = hashlib.sha256()
            head = b""
            for piece in chunks:
                whole.update(piece)
                for feed in feeds:
                    feed(piece)
                if len(head) < delta.HEADER:
                    head += bytes(piece[:delta.HEADER - len(head)])
                p.add(reader.offset - self._seen)
                self._seen = reader.offset
            plan.ident.update(hashlib.sha256(rec.raw_header).digest() + whole.digest())
            placed = [name for name, c in comps if c.finish(writer.pad(rec))]
            new_size = patch_new_size(rec, head) if writer.delta else 0
            need = writer.device_bytes(rec, new_size)
            stash = 0
            for d in selected:
                if need is not None:
                    check_capacity(rec, d, *need)
                if writer.delta and d.partition:
                    plan.units += new_size  # patched, then written to the partition
                    stash = new_size
            if writer.delta:
                plan.room.append((rec.index, rec.data_len, stash))  # the patch spooled, the result stashed
                plan.deltas.append((rec.index, Named(rec.index, rec.op, rec.dst),
                                    [(d.name, sel) for d, sel in dests], rec.data_len + new_size + WRITE_UNITS,
                                    whole.hexdigest()))
            if check is None and last and reader.header.format is not None and head.startswith(manifest.MAGIC):
                raise PackageError("record %d starts like the sstarota manifest but its header is not the "
                                   "manifest's; rejected" % (rec.index + 1))
        finally:
            for _, c in comps:
                c.close()
            for d, _ in dests:
                d.close()
        if check is not None:
            plan.manifest_index = rec.index
            return check
        plan.settle(rec.index, placed, selected, whole.digest()[:8])
        if self.slots is not None:  # A/B slots: what a slot target must read back as before the switch
            for d in selected:
                self.slots.expected(d.name, rec.data_len, None if writer.delta else whole.hexdigest())
        plan.device_records += any(d.kind == "device" for d in selected)
        plan.add_record_hashes(hashlib.sha256(rec.raw_header).digest(), whole.digest())
        if not writer.targets:
            plan.script_records += 1
        if writer.spools and not writer.delta:
            plan.room.append((rec.index, rec.data_len, 0))  # spooled under -t, then run
        plan.units += (len(selected) - len(placed)) * (rec.data_len + new_size + WRITE_UNITS)
        return check

    @staticmethod
    def _manifest_check(plan, reader, rec, last):
        """A ManifestCheck for the last record when it is (or is named like) the manifest."""
        gen = reader.header.format
        if gen is None or not manifest.looks_like(rec):
            return None
        if not last:
            raise PackageError("record %d is named like the sstarota manifest but is not the last record; "
                               "rejected" % (rec.index + 1))
        return ManifestCheck(plan, gen, rec)

    def _dests(self, rec, create=False):
        """(Dest, selected) for every target of the record; script records have one, without a path."""
        writer = for_op(rec.op)
        if not writer.targets:
            writer.check(self.ctx, rec, rec.dst, None)
            return [(Dest(rec.dst, None), True)]
        unmasked = rec.unmasked_targets()
        if unmasked and not self.opts.all_targets:
            raise PackageError("record %d (%s) has %d target(s) beyond the 16 masks a record holds (%s): refused "
                               "(--all-targets writes every target)" % (rec.index + 1, rec.op_name, len(unmasked),
                                                                         shown(" ".join(unmasked))))
        out = []
        try:
            for name, selected in self._selection(rec):
                try:
                    dest = open_dest(self.ctx, rec, name, create=create)
                except PackageError:  # it names the record already
                    raise
                except OSError as exc:
                    raise TargetProblem("record %d (%s %s): %s" % (rec.index + 1, rec.op_name, name,
                                                                  exc.strerror or exc)) from None
                out.append((dest, selected))
        except BaseException:
            for d, _ in out:
                d.close()
            raise
        return out

    def _selection(self, rec):
        """(target, selected) for each target of a record: its mask (or --all-targets), or on an
        A/B board the slot table's choice (slots.Slots.select: the inactive slot's target)."""
        pairs = rec.target_masks()
        if self.slots is not None:
            return self.slots.select(rec.index, rec.op_name, pairs, self.opts.all_targets)
        return [(name, bool(mask) or self.opts.all_targets) for name, mask in pairs]

    # ------------------------------------------------------------------ later passes
    def _verified_reader(self, plan):
        """A later pass: the spool of the verify pass (written by it, in our private work
        directory), else the package again, checked block by block against the verify pass."""
        stream: Union[io.RawIOBase, io.BufferedIOBase]
        if self.spool is not None:
            stream = os.fdopen(os.dup(self.spool.rewind().fileno()), "rb")
        else:
            stream = VerifiedStream(self.source.stream(), plan.digests, plan.stream_size)
        return stream, PackageReader(stream, os.path.basename(self.source.name), strict=True, checksums=False)

    def listing(self, plan, out):
        """Dry run: the plan, one line per target, from a verified re-read."""
        out(plan.headline())
        stream, reader = self._verified_reader(plan)
        placed = left = 0
        with stream:
            for rec, chunks in reader.records():
                if rec.index == plan.manifest_index:
                    continue
                if not for_op(rec.op).targets:
                    out(plan_line(rec, plan.records, rec.dst, None, True))
                    continue
                for name, selected in self._selection(rec):
                    state = IN_PLACE if plan.in_place(rec.index, name) else (
                        FROM_STASH if (rec.index, name) in plan.stashes else "")
                    placed, left = placed + (selected and state == IN_PLACE), left + (selected and state != IN_PLACE)
                    out(plan_line(rec, plan.records, name, self.ctx.fsroot.resolve_path(name), selected, state))
        out("targets: %d already in place, %d to write" % (placed, left))

    def apply(self, plan):
        """Read the package again and hand every verified block to the records' writers."""
        n = plan.records
        infos = plan.manifest.diffs if plan.manifest is not None else {}
        if not plan.to_write and not self.ctx.touched:  # every target in place, nothing ran since
            os.sync()  # what an interrupted run wrote may be in the page cache only
            plan.in_place_records = plan.selected_records
            self.note("every record is in place: nothing to write, the package is not read again")
            return
        stream, reader = self._verified_reader(plan)
        with stream:
            try:
                reader.open()
            except PackageError as exc:
                raise InstallError("the package changed after it was verified: %s" % exc) from None
            for rec, chunks in reader.records():
                self.progress.emit("updating", record=rec.index + 1, records=n, target=rec.dst, label=rec.label)
                if rec.index == plan.manifest_index:
                    m = plan.manifest
                    self.note("manifest checked: %d record hashes, %d delta sources" % (len(plan.fingerprints), len(m.diffs)))
                    continue
                try:
                    self._apply_record(plan, rec, chunks, infos.get(rec.index))
                except OSError as exc:
                    where = " (%s)" % exc.filename if getattr(exc, "filename", None) else ""
                    raise InstallError("%s%s" % (exc.strerror or exc, where), rec, n) from None
                except (PackageError, InstallError) as exc:
                    if isinstance(exc, InstallError) and exc.record is not None:
                        raise
                    raise InstallError(str(exc), rec, n) from None

    def _apply_record(self, plan, rec, chunks, info):
        dests = self._dests(rec, create=True)
        opened = []
        try:
            selected = [d for d, sel in dests if sel]
            writers = [for_op(rec.op)(self.ctx, rec, d, expect=info) for d in to_write(self, plan, rec,
                                                                                     selected, info)]
            for w in writers:
                w.stash = plan.stashes.get((rec.index, w.target))
                w.source = plan.sources.get((rec.index, w.target))
            if not writers:
                skipped(self, plan, rec, selected)
                for _ in chunks:
                    pass
                return
            plan.applied += 1
            self.ctx.touched = True
            if any(w.dest.kind == "device" for w in writers):
                self.state.write_device(rec.index)
            for w in writers:
                w.open()
                opened.append(w)
            for block in chunks:
                for w in opened:
                    w.write(block)
                self.progress.add(len(block) * len(opened))
            while opened:
                opened[0].commit()
                plan.wrote(rec.index, opened.pop(0).target)
                self.progress.add(WRITE_UNITS)
            if for_op(rec.op).delta:
                self.state.record_done(rec.index)
            self.state.device_done(rec.index)
            if plan.manifest is None and plan.deltas:
                self.state.mark(rec.index)
        finally:
            for w in opened:
                try:
                    w.abort()
                except OSError:
                    pass
            for d, _ in dests:
                d.close()

    # ------------------------------------------------------------------ the whole update
    def run(self):
        """Verify, then (unless dry-run) install. Returns the Plan. Raises OtaError."""
        self.state.lock()
        try:
            return self._run()
        finally:
            self._drop_spool()
            self.state.unlock()

    def _run(self):
        p = self.progress
        p.emit("start")
        try:
            plan = self.verify()
            if self.opts.dry_run and self.opts.listing is not None:
                self.listing(plan, self.opts.listing)
        except PackageError as exc:
            p.emit("verifying", failed=True, message=str(exc))
            p.emit("done", failed=True, final=True, message="package rejected, nothing written",
                   code=exc.exit_code, reason=exc.reason)
            raise
        if self.opts.dry_run:
            p.emit("done", final=True, message="dry run: verified, nothing written", code=0, reason="dry-run")
            return plan
        self.ctx.cleaner.sweep_work_dir(self.ctx.tmpdir)
        if self.state is not None:
            self.state.begin(plan.package_id, needed=plan.needs_journal())
            self.ctx.cleaner.sweep_work_dir(self.state.path, beside=True)
        with Scripts(self, plan) as scripts:
            return self._install(plan, scripts)

    def _install(self, plan, scripts):
        p = self.progress
        # the exact work ahead, now that the records are known
        count = (1 if plan.begin_len else 0) + (1 if plan.end_len else 0) + plan.script_records
        p.set_total(p.done + plan.units + self.script_units * count)
        status = -1
        error = None
        try:
            if plan.begin_len:
                p.emit("begin-script", records=plan.records, record=0, target="", label="")
                code = scripts.run_begin()
                self.ctx.touched = self.opts.run_scripts
                p.add(self.script_units)
                if code != 0 and not self.opts.ignore_script_errors:
                    raise InstallError("the begin script exited with status %d; nothing was written (give "
                                       "--ignore-script-errors to go on as the vendor's otaunpack does)" % code,
                                       reason="begin-script")
                if code != 0:
                    self.ctx.script_failed("the begin script", code)
            self.apply(plan)
            self._drop_spool()  # its memory back before the end script restarts the applications
            if self.slots is not None:  # A/B slots: the written slot read back, then one env switch
                self.slots.switch(plan.package_id.split()[0], _version(plan))
            if self.state is not None:
                self.state.finish(plan.records, keep=bool(self.policy.state_dir) or plan.manifest is None)
            status = 0
        except OtaError as exc:
            error = exc if isinstance(exc, InstallError) else InstallError(str(exc), reason=exc.reason)
            if self.slots is not None:  # A/B slots: the reason in the status; the env untouched
                self.slots.failed(str(error), plan.package_id.split()[0], _version(plan))
            if self.state_fallback:
                self.state.drop_if_empty()
            p.emit(p.last.stage, failed=True, message=str(error))
        finally:
            end_code = 0
            if plan.end_len:
                p.emit("end-script", failed=status != 0, message="OTA_STATUS=%d" % status, record=0, target="",
                       label="")
                end_code = scripts.run_end(status)
                p.add(self.script_units)
                if end_code != 0:
                    self.note("the end script exited with status %d" % end_code)
        if error is None and plan.manifest is not None and plan.manifest.version is not None:
            if end_code == 0:
                self.policy.record_version(plan.manifest.version, self.note, self.warn)
            else:
                self.note("version %s not recorded: the end script failed" % plan.manifest.version)
        if error is not None:
            p.emit("done", failed=True, final=True, message=str(error), code=error.exit_code, reason=error.reason)
            raise error
        summary = dict(records=plan.records - (plan.manifest_index is not None), written=plan.applied,
                       in_place=plan.in_place_records, package_reads=self.source.passes,
                       **vars(self.ctx.written))
        self.note("summary: %(records)d record(s): %(written)d written, %(in_place)d already in place; written: "
                  % summary + self.ctx.written.summary())
        failures = self.ctx.script_failures
        message = ""
        if failures:
            message = "%d script(s) failed and were let go: %s" % (
                len(failures), ", ".join("%s (status %d)" % f for f in failures))
            self.note(message)
        p.emit("done", final=True, records=plan.records, record=0, target="", label="", message=message,
               summary=summary, code=0, reason="ok")
        return plan


def _version(plan):
    return plan.manifest.version if plan.manifest is not None else None


def _free(path):
    """(bytes free to this user, the filesystem's id) where path is (or would be made)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize, os.stat(path).st_dev
    except OSError:
        return None, None


def _can_make(path):
    """Could this user create path (or use it, if it is there)?"""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
