"""The installer pipeline: verify pass -> begin script -> apply pass -> end script.

Pass 1 reads the whole package front to back (gzip inflated in-process) and checks every
checksum, count, length and target, and that the stream ends exactly after the last
record; it also records a SHA-256 of every 1 MiB block of every record. Nothing is
written and no script runs before it has succeeded. Pass 2 reads the package again and
hands each record's data, block by block, to the writers registered for its op; every
block is compared with its pass-1 digest before any writer sees it, so a package that
changes between the passes cannot get a byte onto flash. Memory stays bounded: one block
in flight, plus 32 bytes of digest per MiB of package.
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

from .. import delta, manifest, schema
from ..errors import InstallError, OtaError, PackageError
from ..package import PackageReader
from ..paths import resolve
from ..progress import Progress
from ..writers import Context, writer_for
from .blocks import BlockDigests, verified_blocks
from .plan import Plan, Planned, check_manifest, patch_new_size, plan_targets

END_PREAMBLE = 'OTA_STATUS=%d\necho "OTA UPDATA STATUS: ${OTA_STATUS}"\n'


@dataclass
class Options:
    root: Optional[str] = None
    tmpdir: Optional[str] = None
    run_scripts: bool = True
    all_targets: bool = False
    dry_run: bool = False


class Installer:
    """One update from a package source (sources.py): verify, begin script, apply, end script."""

    def __init__(self, source, options=None, progress=None, note=None):
        self.source = source
        self.opts = options or Options()
        self.progress = progress or Progress()
        self.note = note or (lambda msg: None)
        tmpdir = self.opts.tmpdir or tempfile.gettempdir()
        self.ctx = Context(root=self.opts.root, tmpdir=tmpdir, run_scripts=self.opts.run_scripts, note=self.note,
                           progress=self.progress)
        self.script_units = 4096

    # ------------------------------------------------------------------ pass 1
    def verify(self):
        """Read the whole package, check everything, and return the Plan (nothing written)."""
        p = self.progress
        with self.source.stream() as stream:
            reader = PackageReader(stream, os.path.basename(self.source.name), strict=True)
            header = reader.open()
            total = header.package_size()
            self.script_units = max(4096, (total + header.total_data) // 100)
            # a first estimate: verify every byte, write every data byte, run the scripts
            p.set_total(total + header.total_data + self.script_units * 2)
            p.add(reader.offset)
            self._seen = reader.offset
            p.emit("verifying", records=header.record_count)
            planned = []
            candidate = None
            for rec, chunks in reader.records():
                item, candidate = self._plan_record(reader, rec, chunks)
                planned.append(item)
            reader.finish()
            p.add(reader.offset - self._seen)
        scripts = reader.begin_script + reader.end_script
        plan = Plan(self.source.name, header.generation, hashlib.sha256(header.raw + scripts).digest(),
                    reader.begin_script, reader.end_script, planned, reader.offset)
        if candidate is not None and candidate.startswith(manifest.MAGIC):
            check_manifest(plan, manifest.parse(candidate))
        return plan

    def _plan_record(self, reader, rec, chunks):
        """Read one record's data: its block digests, the head of a patch, a manifest's bytes."""
        p = self.progress
        p.emit("verifying", record=rec.index + 1, records=reader.header.record_count, target=rec.dst,
               label=rec.label)
        targets = plan_targets(self.ctx, rec, self.opts.root, self.opts.all_targets)
        digests = BlockDigests()
        keep = [] if manifest.is_manifest(rec) else None
        head = b""
        for piece in chunks:
            digests.update(piece)
            if keep is not None:
                keep.append(bytes(piece))
            if len(head) < delta.HEADER:
                head += bytes(piece[:delta.HEADER - len(head)])
            p.add(reader.offset - self._seen)
            self._seen = reader.offset
        item = Planned(rec, targets, digests.finish(), hashlib.sha256(rec.raw_header).digest(),
                       digests.whole.hexdigest())
        if rec.op == schema.OP_FILE_DIFF:
            item.new_size = patch_new_size(rec, head)
        return item, (b"".join(keep) if keep is not None else None)

    # ------------------------------------------------------------------ pass 2
    def apply(self, plan):
        """Read the package again and hand every verified block to the records' writers."""
        n = len(plan.records)
        with self.source.stream() as stream:
            # the pass-1 digests check every byte here; the vendor checksums need no second pass
            reader = PackageReader(stream, os.path.basename(self.source.name), strict=True, checksums=False)
            try:
                header = reader.open()
            except PackageError as exc:
                raise InstallError("the package changed after it was verified: %s" % exc) from None
            if hashlib.sha256(header.raw + reader.begin_script + reader.end_script).digest() != plan.header_digest:
                raise InstallError("the package header changed after it was verified; nothing more written")
            for (rec, chunks), item in zip(reader.records(), plan.records):
                if hashlib.sha256(rec.raw_header).digest() != item.header_digest:
                    raise InstallError("changed after it was verified", rec, n)
                self.progress.emit("updating", record=rec.index + 1, records=n, target=rec.dst, label=rec.label)
                if item.is_manifest:
                    self.note("manifest checked: %d record hashes, %d delta sources"
                              % (len(plan.checked_manifest.records), len(plan.checked_manifest.diffs)))
                    continue
                try:
                    self._apply_record(item, chunks, n)
                except OSError as exc:
                    where = " (%s)" % exc.filename if getattr(exc, "filename", None) else ""
                    raise InstallError("%s%s" % (exc.strerror or exc, where), rec, n) from None
                except (PackageError, InstallError) as exc:
                    if isinstance(exc, InstallError) and exc.record is not None:
                        raise
                    raise InstallError(str(exc), rec, n) from None

    def _apply_record(self, item, chunks, n):
        rec = item.rec
        writers = [writer_for(rec.op)(self.ctx, rec, t.name, self._recheck(t), expect=item.delta)
                   for t in item.targets if t.selected]
        if not writers:
            self.note("record %d/%d (%s %s): no target selected (mask 0), skipped" % (rec.index + 1, n, rec.op_name,
                                                                                     rec.dst))
            return
        opened = []
        try:
            for w in writers:
                w.open()
                opened.append(w)
            for block in verified_blocks(chunks, item.digests, rec, n):
                for w in opened:
                    w.write(block)
                self.progress.add(len(block) * len(opened))
            while opened:
                opened[0].commit()
                opened.pop(0)
                self.progress.add(4096)
        finally:
            for w in opened:
                try:
                    w.abort()
                except OSError:
                    pass

    def _recheck(self, target):
        if target.path is None:
            return None
        return resolve(target.name, self.opts.root)

    # ------------------------------------------------------------------ the whole update
    def run(self):
        """Verify, then (unless dry-run) install. Returns the Plan. Raises OtaError."""
        p = self.progress
        p.emit("start")
        try:
            plan = self.verify()
        except PackageError as exc:
            p.emit("verifying", failed=True, message=str(exc))
            p.emit("done", failed=True, final=True, message="package rejected, nothing written")
            raise
        if self.opts.dry_run:
            p.emit("done", final=True, message="dry run: verified, nothing written")
            return plan
        # the exact work ahead, now that the records are known
        scripts = (1 if plan.begin_script else 0) + (1 if plan.end_script else 0) + plan.script_records
        p.set_total(p.done + sum(item.units for item in plan.records) + self.script_units * scripts)
        status = -1
        error = None
        try:
            if plan.begin_script:
                p.emit("begin-script", records=len(plan.records))
                code = self.ctx.run_script(plan.begin_script, "begin script")
                p.add(self.script_units)
                if code != 0:
                    raise InstallError("the begin script exited with status %d; nothing was written" % code)
            self.apply(plan)
            status = 0
        except OtaError as exc:
            error = exc if isinstance(exc, InstallError) else InstallError(str(exc))
            p.emit(p.last.stage, failed=True, message=str(error))
        finally:
            self._end_script(plan, status)
        if error is not None:
            p.emit("done", failed=True, final=True, message=str(error))
            raise error
        p.emit("done", final=True, records=len(plan.records), record=0, target="", label="")
        return plan

    def _end_script(self, plan, status):
        if not plan.end_script:
            return
        self.progress.emit("end-script", failed=status != 0, message="OTA_STATUS=%d" % status,
                           record=0, target="", label="")
        script = (END_PREAMBLE % status).encode() + plan.end_script
        code = self.ctx.run_script(script, "end script")
        self.progress.add(self.script_units)
        if code != 0:
            self.note("the end script exited with status %d" % code)
