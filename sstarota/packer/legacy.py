"""Legacy single-header packages (otabinheader): one 2584-byte header of 32 slots; the
scripts and every slot's data are appended after it with cat."""

import os

from .. import schema
from ..errors import InputError, PackageError, UsageError
from ..fsutil import AtomicFile, umask
from .build import commit_copy, commit_package, package_path, read_script, rewrite
from .data import FileData


def _empty_slot():
    return dict(data_len=0, dst="", dst_size=0, op=0, data_sum=0)


def legacy_create(path, begin=None, end=None):
    """Write a legacy single header (scripts' lengths and sums; the scripts go after it with cat)."""
    begin_b = read_script(begin, "begin")
    end_b = read_script(end, "end")
    raw = schema.build_legacy_header(dict(
        record_count=0, begin_len=len(begin_b), begin_sum=schema.legacy_sum(begin_b).digest(), end_len=len(end_b),
        end_sum=schema.legacy_sum(end_b).digest(), slots=[_empty_slot() for _ in range(schema.LEGACY_SLOTS)]))
    with AtomicFile(package_path(path), sync=False) as out:
        out.write(raw)
        commit_package(out, path, 0o644 & ~umask())


def legacy_append(path, src, dst, dst_size, op):
    """Fill the next legacy slot for src; rewrites only the 2584-byte header (atomically)."""
    if op not in schema.LEGACY_OPS:
        raise UsageError("-p %r: the legacy op is 0 (raw), 1 (ubi) or 2 (file)" % op)
    try:
        with open(path, "rb") as f:
            raw = f.read(schema.LEGACY_SIZE)
    except OSError as exc:
        raise InputError("cannot open package %s: %s" % (path, exc.strerror)) from None
    if not schema.legacy_sum_ok(raw):
        raise PackageError("%s is not a legacy package (no valid 2584-byte header): create it with otabinheader -c" % path)
    h = schema.parse(schema.LegacyHeader, raw, "%s: the legacy header" % path, 0)
    if h.record_count >= schema.LEGACY_SLOTS:
        raise InputError("%s already holds %d records: the legacy header has only %d slots"
                         % (path, h.record_count, schema.LEGACY_SLOTS))
    source = FileData(src)
    if source.length > schema.U32_MAX:
        raise InputError("%s is %d bytes: the legacy format holds at most %d per slot" % (src, source.length, schema.U32_MAX))
    if dst_size and source.length > dst_size:
        raise InputError("%s is %d bytes, larger than its target size -t %d (0x%x)" % (src, source.length, dst_size, dst_size))
    if dst_size > schema.U32_MAX:
        raise InputError("-t %d does not fit the legacy 32-bit size field" % dst_size)
    total = schema.legacy_sum()
    for piece in source.chunks():
        total.update(piece)
    slots = [dict(s) for s in h.slots]
    for s in slots:
        s.pop("_io", None)
    slots[h.record_count] = dict(data_len=source.length, dst=dst, dst_size=dst_size, op=op, data_sum=total.digest())
    fields = dict(record_count=h.record_count + 1, begin_len=h.begin_len, begin_sum=h.begin_sum,
                  end_len=h.end_len, end_sum=h.end_sum, slots=slots)
    try:
        new = schema.build_legacy_header(fields)
    except InputError as exc:
        raise InputError("target %r: %s (at most 63 bytes)" % (dst, exc)) from None
    with rewrite(path, os.path.getsize(path)) as out:
        out.f.seek(0)
        out.write(new)
        commit_copy(out, path)
    return h.record_count + 1

