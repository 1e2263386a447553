"""Signing a finished package: its manifest rewritten from the package's own bytes, with a
signature (and, when given, new compatible boards and version), atomically.

Every record's hashes are computed here from the bytes on disk, not taken from an
existing manifest: a package whose records or header no longer match its manifest is
refused, not signed. An existing manifest gives its delta entries (only the packer that
made a delta knows its old and new content), its compatible list and version.
"""

import hashlib
import os

from .. import manifest
from ..errors import PackageError
from ..package import PackageReader
from .build import _records_on_disk, _totals, _write_records, commit_copy, read_existing, rewrite


def record_hashes(path, upto):
    """(header sha256, data sha256) hex pairs of the first `upto` records, read and
    checksum-verified from the raw package at path."""
    out = []
    with open(path, "rb") as f:
        reader = PackageReader(f, path, strict=True)
        reader.open()
        for rec, chunks in reader.records():
            if rec.index >= upto:
                break
            h = hashlib.sha256()
            for piece in chunks:
                h.update(piece)
            out.append((hashlib.sha256(rec.raw_header).hexdigest(), h.hexdigest()))
    return out


def _existing_manifest(path, reader, records, last):
    if last is None:
        return manifest.Manifest(), len(records)
    m = manifest.parse(last)
    h = reader.header
    if manifest.header_digest(h.format, h.raw, reader.begin_script, reader.end_script) != m.package:
        raise PackageError("%s: its header or scripts do not match its manifest; not signing" % path)
    return m, len(records) - 1


def sign(path, key=None, compatible=None, version=None, log=None, sync=False):
    """Rewrite path's manifest from its bytes, signed with key (a signing.SigningKey) when
    given; compatible (names) / version replace the manifest's when not None."""
    reader = read_existing(path)
    header = reader.header
    gen = header.format
    records, last = _records_on_disk(path, header)
    m, n = _existing_manifest(path, reader, records, last)
    hashes = record_hashes(path, n)
    if last is not None and [tuple(x) for x in m.records] != hashes:
        raise PackageError("%s: its records do not match its manifest; not signing" % path)
    m.records, m.signature = hashes, None
    if compatible is not None:
        m.compatible = tuple(compatible)
    if version is not None:
        m.version = version
    manifest.check_fields(m.compatible, m.version)
    keep = records[n][0] if last is not None else os.path.getsize(path)
    data_before = sum(r.data_len for _, r in records[:n])
    count, total = _totals([], m, n, data_before, key)
    new_header = gen.build_header(count, total, header.begin_len, header.end_len,
                                  gen.script_checksum(reader.begin_script, reader.end_script), header.tool_id)
    m.package = manifest.header_digest(gen, new_header, reader.begin_script, reader.end_script)
    with rewrite(path, keep, sync) as out:
        _write_records(out.f, gen, [], [], m, None, key)
        out.f.seek(0)
        out.write(new_header)
        commit_copy(out, path)
    if log:
        log("%s: manifest over %d record(s)%s" % (path, n, ", signed" if key is not None else ""))
    return m
