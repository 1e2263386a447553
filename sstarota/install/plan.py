"""The plan the verify pass makes: every record with its targets on this host, the
digests of its data blocks, and what the manifest says; checked before anything is written."""

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional

from .. import delta, manifest, schema
from ..errors import PackageError
from ..flashio import is_partition, open_content
from ..paths import resolve
from ..writers import writer_for
from .blocks import BLOCK


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
    delta: Optional[manifest.DeltaInfo] = None  # from the manifest, for delta records
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


def plan_targets(ctx, rec, root=None, all_targets=False):
    """The record's targets on this host, each checked by its writer (no writes)."""
    if rec.op == schema.OP_SCRIPT:
        writer_for(rec.op).check(ctx, rec, rec.dst, None)
        return [Target(rec.dst, None, True)]
    targets = []
    for name, mask in rec.target_masks():
        try:
            path = resolve(name, root)
        except PackageError as exc:
            raise PackageError("record %d: %s" % (rec.index, exc)) from None
        writer_for(rec.op).check(ctx, rec, name, path)
        targets.append(Target(name, path, bool(mask) or all_targets))
    if rec.op == schema.OP_FILE_DIFF and rec.data_len < delta.HEADER:
        raise PackageError("record %d: file-diff data is %d bytes, too short for a BSDIFF40 patch"
                           % (rec.index, rec.data_len))
    return targets


def patch_new_size(rec, head):
    """The result size a delta record's patch header declares."""
    try:
        return delta.patch_new_size(head)
    except PackageError as exc:
        raise PackageError("record %d (file-diff %s): %s" % (rec.index, rec.dst, exc)) from None


def check_manifest(plan, m):
    """Every record against its manifest hashes; every delta's source on this host."""
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
        item.delta = info
        for t in item.targets:
            if t.selected:
                check_delta_source(item.rec, t, info)


def _content_digest(f, limit):
    """(bytes read, sha256 hex) of f's content, of at most limit bytes (None: all)."""
    h = hashlib.sha256()
    n = 0
    left = limit
    while left is None or left > 0:
        piece = f.read(BLOCK if left is None else min(BLOCK, left))
        if not piece:
            break
        h.update(piece)
        n += len(piece)
        if left is not None:
            left -= len(piece)
    return n, h.hexdigest()


def check_delta_source(rec, target, info):
    """Hash the content a delta will patch: a file whole, a device's first old_len bytes."""
    what = "record %d (file-diff %s)" % (rec.index, target.name)
    try:
        f = open_content(target.path)
    except OSError as exc:
        raise PackageError("%s: cannot read the content to patch: %s" % (what, exc.strerror)) from None
    with f:
        n, found = _content_digest(f, info.old_len if is_partition(target.name, target.path) else None)
    if n != info.old_len or found != info.old_sha256:
        raise PackageError("%s: %s is not the content the delta was made from: expected sha256 %s (%d bytes),"
                           " found %s (%d bytes)" % (what, target.name, info.old_sha256, info.old_len, found, n))
