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

import gzip
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

from . import delta, manifest, schema
from .fsutil import unlink_quietly
from .errors import InstallError, OtaError, PackageError, UsageError
from .package import GZIP_MAGIC, PackageReader, expected_size
from .paths import resolve
from .progress import Progress
from .writers import Context, writer_for
from .writers.base import is_partition
from .writers.mtd import open_content

BLOCK = 256 << 10  # verify/write granularity: a few of these in flight at once on a 64 MB board

END_PREAMBLE = 'OTA_STATUS=%d\necho "OTA UPDATA STATUS: ${OTA_STATUS}"\n'


# ---------------------------------------------------------------------------- sources


class PathSource:
    """A package file, opened once; every pass reads it from the start through that fd."""

    def __init__(self, path, gz=None):
        self.name = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError("cannot open package %s: %s" % (path, exc.strerror)) from None
        head = os.pread(self.fd, 2, 0)
        self.gz = head == GZIP_MAGIC if gz is None else gz
        if gz is False and head == GZIP_MAGIC:
            raise PackageError("%s is gzip-compressed: use -x" % path)

    def stream(self):
        f = os.fdopen(os.dup(self.fd), "rb")
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb") if self.gz else f

    def close(self):
        os.close(self.fd)


class _Tee(io.RawIOBase):
    def __init__(self, src, spool):
        self.src = src
        self.spool = spool

    def readable(self):
        return True

    def readinto(self, b):
        data = self.src.read(len(b))
        n = len(data)
        b[:n] = data
        self.spool.write(data)
        return n


class StdinSource:
    """A package on a pipe: pass 1 spools it (as received) under the work directory."""

    def __init__(self, stream, spool_dir, gz=None):
        self.name = "<stdin>"
        self.src = stream
        fd, self.spool_path = tempfile.mkstemp(prefix="sstarota-spool-", dir=spool_dir)
        self.spool = os.fdopen(fd, "w+b")
        head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
        self.gz = head == GZIP_MAGIC if gz is None else gz
        self.passes = 0

    def stream(self):
        self.passes += 1
        if self.passes == 1:
            raw = io.BufferedReader(_Tee(self.src, self.spool), BLOCK)
            return gzip.GzipFile(fileobj=raw, mode="rb") if self.gz else raw
        self.spool.flush()
        f = os.fdopen(os.dup(self.spool.fileno()), "rb")
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb") if self.gz else f

    def close(self):
        self.spool.close()
        unlink_quietly(self.spool_path)


# ---------------------------------------------------------------------------- plan


@dataclass
class Target:
    name: str  # as the package names it
    path: Optional[str]  # on this host (None for script records)
    selected: bool


@dataclass
class Planned:
    rec: object
    targets: List[Target]
    digests: List[bytes] = field(default_factory=list)
    header_digest: bytes = b""
    data_sha256: str = ""
    diff: Optional[manifest.DiffInfo] = None  # from the manifest, for delta records
    is_manifest: bool = False
    new_size: int = 0  # delta records: the size of the result (from the patch header)

    @property
    def units(self):
        """Apply-pass work: the data to every selected target (deltas: also the result)."""
        if self.is_manifest:
            return 0
        n = sum(1 for t in self.targets if t.selected)
        return n * (self.rec.data_len + self.new_size) + 4096 * n

    @property
    def writes(self):
        return any(t.selected for t in self.targets)


@dataclass
class Plan:
    name: str
    generation: str
    header_digest: bytes
    begin_script: bytes
    end_script: bytes
    records: List[Planned]
    package_bytes: int
    checked_manifest: Optional[manifest.Manifest] = None

    @property
    def script_records(self):
        return sum(1 for p in self.records if p.rec.op == schema.OP_SCRIPT and not p.is_manifest)

    def lines(self):
        out = ["package %s: %s, %d record(s), %d bytes; begin script %d bytes, end script %d bytes"
               % (self.name, self.generation, len(self.records), self.package_bytes,
                  len(self.begin_script), len(self.end_script))]
        for p in self.records:
            r = p.rec
            for t in p.targets:
                where = "" if t.path is None or t.path == t.name else " -> %s" % t.path
                skip = "" if t.selected else " (mask 0: skipped)"
                out.append("  %d/%d %-11s %s%s, %d bytes%s" % (r.index + 1, len(self.records), r.op_name,
                                                            t.name, where, r.data_len, skip))
        return out


@dataclass
class Options:
    root: Optional[str] = None
    tmpdir: Optional[str] = None
    run_scripts: bool = True
    all_targets: bool = False
    dry_run: bool = False


class _BlockDigests:
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


def _verified_blocks(chunks, digests, what):
    """Re-block the pass-2 stream and yield each block only once its digest matches pass 1."""
    buf = bytearray()
    index = 0
    running = hashlib.sha256()

    def check(block):
        nonlocal index
        running.update(block)
        if index >= len(digests) or running.copy().digest() != digests[index]:
            raise InstallError("%s changed after it was verified (block %d): stopped before writing it"
                               % (what, index))
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
        raise InstallError("%s is shorter than when it was verified" % what)


# ---------------------------------------------------------------------------- installer


class Installer:
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
        p = self.progress
        stream = self.source.stream()
        with stream:
            reader = PackageReader(stream, os.path.basename(self.source.name), strict=True)
            header = reader.open()
            n = header.record_count
            total = expected_size(header)
            self.script_units = max(4096, (total + header.total_data) // 100)
            # a first estimate: verify every byte, write every data byte, run the scripts
            p.set_total(total + header.total_data + self.script_units * 2)
            p.add(reader.offset)
            seen = reader.offset
            p.emit("verifying", records=n)
            planned = []
            candidate = None
            for rec, chunks in reader.records():
                p.emit("verifying", record=rec.index + 1, records=n, target=rec.dst, label=rec.label)
                targets = self._plan_targets(rec)
                digests = _BlockDigests()
                keep = [] if manifest.is_manifest(rec) else None
                head = b""
                for piece in chunks:
                    digests.update(piece)
                    if keep is not None:
                        keep.append(bytes(piece))
                    if len(head) < 32:
                        head += bytes(piece[:32 - len(head)])
                    p.add(reader.offset - seen)
                    seen = reader.offset
                candidate = b"".join(keep) if keep is not None else None
                item = Planned(rec, targets, digests.finish(), hashlib.sha256(rec.raw_header).digest(),
                               digests.whole.hexdigest())
                if rec.op == schema.OP_FILE_DIFF:
                    item.new_size = self._patch_new_size(rec, head)
                planned.append(item)
            reader.finish()
            p.add(reader.offset - seen)
        scripts = reader.begin_script + reader.end_script
        plan = Plan(self.source.name, header.generation, hashlib.sha256(header.raw + scripts).digest(),
                    reader.begin_script, reader.end_script, planned, reader.offset)
        if candidate is not None and candidate.startswith(manifest.MAGIC):
            self._check_manifest(plan, manifest.parse(candidate))
        return plan

    @staticmethod
    def _patch_new_size(rec, head):
        try:
            return delta.patch_new_size(head)
        except PackageError as exc:
            raise PackageError("record %d (file-diff %s): %s" % (rec.index, rec.dst, exc)) from None

    def _check_manifest(self, plan, m):
        """Every record against its manifest hashes; every delta's source on this board."""
        records = plan.records[:-1]
        if len(m.records) != len(records):
            raise PackageError("the manifest lists %d records, the package has %d before it"
                               % (len(m.records), len(records)))
        for item, (header_sha, data_sha) in zip(records, m.records):
            rec = item.rec
            if item.header_digest.hex() != header_sha:
                raise PackageError("record %d (%s %s): its header does not match the manifest"
                                   % (rec.index, rec.op_name, rec.dst))
            if item.data_sha256 != data_sha:
                raise PackageError("record %d (%s %s): its data does not match the manifest"
                                   % (rec.index, rec.op_name, rec.dst))
        plan.records[-1].is_manifest = True
        plan.checked_manifest = m
        for index, info in m.diffs.items():
            if index >= len(records) or records[index].rec.op != schema.OP_FILE_DIFF:
                raise PackageError("the manifest has delta data for record %d, which is not a delta" % index)
            item = records[index]
            item.diff = info
            for t in item.targets:
                if t.selected:
                    self._check_delta_source(item.rec, t, info)

    def _check_delta_source(self, rec, target, info):
        """Hash the content a delta will patch: a file whole, a device's first old_len bytes."""
        what = "record %d (file-diff %s)" % (rec.index, target.name)
        try:
            f = open_content(target.path)
        except OSError as exc:
            raise PackageError("%s: cannot read the content to patch: %s" % (what, exc.strerror)) from None
        h = hashlib.sha256()
        n = 0
        with f:
            device = is_partition(target.name, target.path)
            left = info.old_len if device else None
            while left is None or left > 0:
                piece = f.read(BLOCK if left is None else min(BLOCK, left))
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
                if left is not None:
                    left -= len(piece)
        found = h.hexdigest()
        if n != info.old_len or found != info.old_sha256:
            raise PackageError("%s: %s is not the content the delta was made from: expected sha256 %s (%d bytes),"
                               " found %s (%d bytes)" % (what, target.name, info.old_sha256, info.old_len, found, n))

    def _plan_targets(self, rec):
        if rec.op == schema.OP_SCRIPT:
            writer_for(rec.op).check(self.ctx, rec, rec.dst, None)
            return [Target(rec.dst, None, True)]
        targets = []
        for name, mask in rec.target_masks():
            try:
                path = resolve(name, self.opts.root)
            except PackageError as exc:
                raise PackageError("record %d: %s" % (rec.index, exc)) from None
            writer_for(rec.op).check(self.ctx, rec, name, path)
            targets.append(Target(name, path, bool(mask) or self.opts.all_targets))
        if rec.op == schema.OP_FILE_DIFF and rec.data_len < 32:
            raise PackageError("record %d: file-diff data is %d bytes, too short for a BSDIFF40 patch"
                               % (rec.index, rec.data_len))
        return targets

    # ------------------------------------------------------------------ pass 2
    def apply(self, plan):
        p = self.progress
        n = len(plan.records)
        stream = self.source.stream()
        with stream:
            # the pass-1 digests check every byte here; the vendor checksums need no second pass
            reader = PackageReader(stream, os.path.basename(self.source.name), strict=True, checksums=False)
            try:
                header = reader.open()
            except PackageError as exc:
                raise InstallError("the package changed after it was verified: %s" % exc) from None
            if hashlib.sha256(header.raw + reader.begin_script + reader.end_script).digest() != plan.header_digest:
                raise InstallError("the package header changed after it was verified; nothing more written")
            for (rec, chunks), item in zip(reader.records(), plan.records):
                what = "record %d/%d (%s %s)" % (rec.index + 1, n, rec.op_name, rec.dst)
                if hashlib.sha256(rec.raw_header).digest() != item.header_digest:
                    raise InstallError("%s changed after it was verified" % what)
                p.emit("updating", record=rec.index + 1, records=n, target=rec.dst, label=rec.label)
                if item.is_manifest:
                    self.note("manifest checked: %d record hashes, %d delta sources"
                              % (len(plan.checked_manifest.records), len(plan.checked_manifest.diffs)))
                    continue
                writers = [writer_for(rec.op)(self.ctx, rec, t.name, self._recheck(t, what), expect=item.diff)
                           for t in item.targets if t.selected]
                if not writers:
                    self.note("%s: no target selected (mask 0), skipped" % what)
                    continue
                opened = []
                try:
                    for w in writers:
                        w.open()
                        opened.append(w)
                    for block in _verified_blocks(chunks, item.digests, what):
                        for w in opened:
                            w.write(block)
                        p.add(len(block) * len(opened))
                    while opened:
                        opened[0].commit()
                        opened.pop(0)
                        p.add(4096)
                except OSError as exc:
                    raise InstallError("%s: %s%s" % (what, exc.strerror or exc,
                                                     " (%s)" % exc.filename if getattr(exc, "filename", None) else "")) from None
                except PackageError as exc:
                    raise InstallError("%s: %s" % (what, exc)) from None
                except InstallError as exc:
                    if str(exc).startswith(what):
                        raise
                    raise InstallError("%s: %s" % (what, exc)) from None
                finally:
                    for w in opened:
                        try:
                            w.abort()
                        except OSError:
                            pass

    def _recheck(self, target, what):
        if target.path is None:
            return None
        try:
            return resolve(target.name, self.opts.root)
        except PackageError as exc:
            raise InstallError("%s: %s" % (what, exc)) from None

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


def open_source(path, gz=None, tmpdir=None, stdin=None):
    """A package source for a path, or for '-' (stdin, spooled under tmpdir)."""
    if path == "-":
        if not tmpdir:
            raise UsageError("reading the package from stdin needs -t DIR to spool it")
        import sys

        return StdinSource(stdin or sys.stdin.buffer, tmpdir, gz)
    return PathSource(path, gz)
