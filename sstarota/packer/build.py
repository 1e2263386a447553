"""Laying records down: create, build and append packages, streamed and crash-safe.

Appends never touch the package in place: the package is copied next to itself (the
kernel copies it; no bytes pass through Python), the new records are streamed onto the
copy, the header is rewritten, and the copy is renamed over the original
(fsutil.AtomicFile). A failed or interrupted append leaves the previous package as it was.
"""

import hashlib
import os
import stat
from typing import Callable, Optional

from .. import __version__, manifest, schema
from ..errors import InputError, PackageError, UsageError
from ..fsutil import AtomicFile, umask
from ..package import PackageReader
from ..sources import FileSource
from .data import CHUNK, BytesData
from .records import RecordSpec, validate

DEFAULT_TOOL_ID = "sstarota-%s" % __version__


def _write_record(f, gen, spec, raw, hashes=False):
    """Write one record at f's position: its header (raw, checksum zero), the streamed data,
    then the header again with its checksum. With hashes=True, returns the SHA-256 of the
    final record header and of the data (for the manifest)."""
    start = f.tell()
    f.write(raw)
    hasher = gen.record_hasher(raw)
    data_sha = hashlib.sha256() if hashes else None
    written = 0
    if spec.source is not None:
        for piece in spec.source.chunks():
            hasher.update(piece)
            if data_sha is not None:
                data_sha.update(piece)
            f.write(piece)
            written += len(piece)
    if written != spec.data_len:
        raise InputError("%s record for %s: expected %d data bytes, got %d"
                         % (schema.OP_NAMES[spec.op], spec.dst, spec.data_len, written))
    end = f.tell()
    final = gen.seal_record(raw, hasher.digest())
    f.seek(start)
    f.write(final)
    f.seek(end)
    if not hashes:
        return None
    return hashlib.sha256(final).hexdigest(), data_sha.hexdigest()


def read_script(path, what):
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            data = f.read(schema.MAX_BEGIN_END + 1)
    except OSError as exc:
        raise InputError("cannot read %s script %s: %s" % (what, path, exc.strerror)) from None
    if len(data) > schema.MAX_BEGIN_END:
        raise InputError("%s script %s is larger than the %d MiB otaunpack accepts for begin and end scripts "
                         "(a script record, --script-add, may hold up to %d MiB)"
                         % (what, path, schema.MAX_BEGIN_END >> 20, schema.MAX_SCRIPT >> 20))
    return data


def create(path, generation=schema.DEFAULT_GENERATION, begin=None, end=None, tool_id=DEFAULT_TOOL_ID, with_manifest=False,
           compatible=(), version=None):
    """Create an empty package (header and scripts) at path, replacing it atomically.
    compatible, version: the manifest's fields (they imply with_manifest)."""
    build(path, [], generation, begin, end, tool_id, with_manifest=with_manifest, compatible=compatible,
          version=version)


def _manifest_spec(m, key=None):
    """The manifest record (signed with key, a signing key, when given)."""
    sig = None
    if key is not None:
        from .. import signing

        sig = signing.sign(key, hashlib.sha256(m.body()).digest())
    data = m.to_bytes(sig)
    return RecordSpec(schema.OP_SCRIPT, manifest.NAME, BytesData(data, manifest.NAME), dst_size=len(data),
                      mode=0o100644, src_name=manifest.NAME)


def _write_records(f, gen, specs, raws, m, log, key=None):
    """Write specs (and, when m is a Manifest, the updated manifest record last, signed with key)."""
    for spec, raw in zip(specs, raws):
        hashes = _write_record(f, gen, spec, raw, hashes=m is not None)
        if m is not None:
            if spec.delta is not None:
                m.diffs[len(m.records)] = spec.delta
            m.records.append(hashes)
        if log:
            log("added %s %s (%d bytes)" % (schema.OP_NAMES[spec.op], spec.dst, spec.data_len))
    if m is not None:
        spec = _manifest_spec(m, key)
        _write_record(f, gen, spec, validate(gen, spec, manifest_record=True))


def build(path, specs, generation=schema.DEFAULT_GENERATION, begin=None, end=None, tool_id=DEFAULT_TOOL_ID, sync=False, log=None,
          with_manifest=False, compatible=(), version=None):
    """Write a whole package in one pass: header, scripts, then every record.

    The same bytes as create() followed by one append() per record, without the copy each
    append makes for its crash safety. with_manifest adds the sstarota manifest as the last
    record (see manifest.py).
    """
    gen = schema.GENERATIONS.get(generation)
    if gen is None:
        raise UsageError("unknown --format %r (choose 0.3, 0.4 or 1.6)" % generation)
    begin_b = read_script(begin, "begin")
    end_b = read_script(end, "end")
    raws = [validate(gen, spec) for spec in specs]
    m = None
    if with_manifest or compatible or version is not None:
        m = manifest.Manifest(compatible=tuple(compatible), version=version)
        manifest.check_fields(m.compatible, version)
    count, total = _totals(specs, m)
    header = gen.build_header(count, total, len(begin_b), len(end_b), gen.script_checksum(begin_b, end_b), tool_id)
    if m is not None:
        m.package = manifest.header_digest(gen, header, begin_b, end_b)
    with AtomicFile(package_path(path), sync=sync) as out:
        out.write(header)
        out.write(begin_b)
        out.write(end_b)
        _write_records(out.f, gen, specs, raws, m, log)
        commit_package(out, path, 0o644 & ~umask())


def _totals(specs, m, count=0, total=0, key=None):
    """Record count and data total after adding specs (and the manifest, when m is given,
    signed with key when given).

    The manifest's final size depends on the hashes, not their values: it is computed from
    a manifest of the same shape filled with placeholder digests (and signature)."""
    count += len(specs)
    total += sum(s.data_len for s in specs)
    if m is not None:
        shape = manifest.Manifest(m.package, list(m.records), dict(m.diffs), m.compatible, m.version)
        for spec in specs:
            if spec.delta is not None:
                shape.diffs[len(shape.records)] = spec.delta
            shape.records.append(("0" * 64, "0" * 64))
        count += 1
        sig = None
        if key is not None:
            from .. import signing

            sig = manifest.Signature(signing.alg_of(key), "0" * 16, bytes(64))
        total += len(shape.to_bytes(sig))
    if count > schema.MAX_RECORDS:
        raise InputError("the package would hold %d records, more than the %d otaunpack accepts"
                         % (count, schema.MAX_RECORDS))
    return count, total


def read_existing(path):
    """Open an existing raw package for appending: header and scripts verified, size checked."""
    with FileSource(path, gz=False, raw_hint="otapack appends to the raw package (gunzip it first)") as source:
        with source.stream() as f:
            reader = PackageReader(f, path)
            header = reader.open()
        size = source.size
    if header.generation == schema.LEGACY:
        raise PackageError("%s is a legacy single-header package; add slots with otabinheader -a" % path)
    want = header.package_size()
    if size != want:
        raise PackageError(
            "%s is %d bytes but its header describes %d: truncated or with trailing bytes, refusing to append"
            % (path, size, want)
        )
    return reader


def _copy(src, fout, size):
    """Copy the first size bytes of a package into the file fout, in the kernel
    (copy_file_range; reflinks where the filesystem can)."""
    with open(src, "rb") as fin:
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except (AttributeError, OSError):
            done = 0
        if done != size:
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            left = size
            while left:
                piece = fin.read(min(left, CHUNK))
                if not piece:
                    raise InputError("%s shrank while it was copied" % src)
                fout.write(piece)
                left -= len(piece)


def package_path(path):
    """The file a package path names: a symlink's target (written through, as the vendor's
    fopen does: build trees link SStarOta.bin into an output directory)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def commit_package(out, path, mode):
    """Put a finished AtomicFile in place of the package at path: renamed over the file path
    names, or, when that file has other hard links, copied into it (every name sees the new
    package; that copy is not crash-safe: the finished package stays beside it until done)."""
    real = package_path(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    if st is None or st.st_nlink < 2:
        out.commit(mode=mode)
        return
    out.f.flush()
    if out.sync:
        os.fsync(out.f.fileno())
    out.f.seek(0)
    with open(real, "r+b") as dest:
        while True:
            piece = out.f.read(CHUNK)
            if not piece:
                break
            dest.write(piece)
        dest.truncate()
        dest.flush()
        if out.sync:
            os.fsync(dest.fileno())
    out.abort()


def rewrite(path, keep, sync=False):
    """An AtomicFile beside the package at path holding its first keep bytes (the file
    position at their end), to be extended and committed with commit_copy()."""
    out = AtomicFile(package_path(path), sync=sync)
    try:
        _copy(path, out.f, keep)
        out.f.seek(0, os.SEEK_END)
    except BaseException:
        out.abort()
        raise
    return out


def commit_copy(out, path):
    """Put a rewrite() of path in its place, with its permission bits (commit_package)."""
    commit_package(out, path, stat.S_IMODE(os.stat(path).st_mode))


def _records_on_disk(path, header):
    """(offset, Record) of every record of a raw package, found by seeking over the data."""
    gen = header.format
    out = []
    with open(path, "rb") as f:
        offset = gen.header_size + header.begin_len + header.end_len
        for i in range(header.record_count):
            f.seek(offset)
            r = schema.parse(gen.record, f.read(gen.record_size), "%s: record %d header" % (path, i), offset)
            out.append((offset, r))
            offset += gen.record_size + r.data_len
        last = None
        if out and manifest.looks_like(out[-1][1]):
            f.seek(out[-1][0] + gen.record_size)
            last = f.read(out[-1][1].data_len)
    return out, last


def append(path, specs, tool_id=None, log: Optional[Callable[[str], None]] = None, sync=False,
           note: Optional[Callable[[str], None]] = None):
    """Append records to an existing package in its own generation, atomically.

    The package is copied next to itself, extended and renamed over the original: an
    interrupted append leaves the previous package. sync=True also fsyncs before the
    rename (durability across power loss, at the cost of writing the package to disk).
    A package with a manifest keeps it as its last record, updated (a signature it had is
    dropped: note, or log, says so). log gets a line per record.
    """
    reader = read_existing(path)
    header = reader.header
    gen = header.format
    raws = [validate(gen, spec) for spec in specs]
    keep = os.path.getsize(path)
    count, total = header.record_count, header.total_data
    m = None
    records, last = _records_on_disk(path, header)
    if last is not None:
        m = manifest.parse(last)
        if len(m.records) != count - 1:
            raise PackageError("%s: its manifest lists %d records, the package has %d before it"
                               % (path, len(m.records), count - 1))
        say = note or log
        if m.signature is not None and say:
            say("the package was signed by key %s; its signature is dropped (sign it again)" % m.signature.key_id)
        m.signature = None
        keep = records[-1][0]  # the old manifest record is dropped and written anew
        count -= 1
        total -= records[-1][1].data_len
    count, total = _totals(specs, m, count, total)
    new_header = gen.build_header(count, total, header.begin_len, header.end_len,
                                  gen.script_checksum(reader.begin_script, reader.end_script),
                                  tool_id or header.tool_id)
    if m is not None:
        m.package = manifest.header_digest(gen, new_header, reader.begin_script, reader.end_script)
    with rewrite(path, keep, sync) as out:
        _write_records(out.f, gen, specs, raws, m, log)
        out.f.seek(0)
        out.write(new_header)
        commit_copy(out, path)
    return count

