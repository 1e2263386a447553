"""Build and append packages, streamed, crash-safe.

Appends never touch the package in place: the package is copied next to itself (the
kernel copies it; no bytes pass through Python), the new records are streamed onto the
copy, the header is rewritten, the copy is fsynced and renamed over the original. A
failed or interrupted append leaves the previous package as it was.
"""

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from construct import ConstructError

from . import __version__, checksum, delta, manifest, schema
from .errors import InputError, PackageError, UsageError
from .fsutil import fsync_dir, unlink_quietly
from .package import CHUNK, GZIP_MAGIC, PackageReader, construct_message, expected_size, record_hasher

DEFAULT_TOOL_ID = "sstarota-%s" % __version__


# ---------------------------------------------------------------------------- sources


class Source:
    """Record data: a length known before writing, then chunks."""

    name = ""
    length = 0

    def chunks(self):
        raise NotImplementedError


class FileSource(Source):
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError("cannot read source %s: %s" % (path, exc.strerror)) from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError("source %s is not a regular file" % path)
        self.st = st
        self.length = st.st_size

    def chunks(self):
        done = 0
        try:
            with open(self.path, "rb") as f:
                while True:
                    piece = f.read(CHUNK)
                    if not piece:
                        break
                    done += len(piece)
                    yield piece
        except OSError as exc:
            raise InputError("cannot read source %s: %s" % (self.path, exc.strerror)) from None
        if done != self.length:
            raise InputError("source %s changed size while it was packed (%d -> %d bytes)" % (self.path, self.length, done))


class BytesSource(Source):
    def __init__(self, data, name=""):
        self.data = data
        self.name = name
        self.length = len(data)

    def chunks(self):
        view = memoryview(self.data)
        for i in range(0, len(view), CHUNK):
            yield view[i : i + CHUNK]


# ---------------------------------------------------------------------------- records


@dataclass
class RecordSpec:
    """One record to append: op, target(s), data, and the header fields."""

    op: int
    dst: str
    source: Optional[Source] = None
    dst_size: int = 0
    mode: int = 0
    src_name: str = ""
    label: str = ""
    masks: Optional[List[int]] = None
    diff: Optional[manifest.DiffInfo] = None  # old/new lengths and hashes of a delta

    @property
    def data_len(self):
        return self.source.length if self.source else 0


def _fields(gen, spec, data_checksum):
    fields = dict(data_len=spec.data_len, dst=spec.dst, dst_size=spec.dst_size, mode=spec.mode, op=spec.op)
    if gen is schema.GEN16:
        masks = list(spec.masks or [])
        masks += [1] * (schema.MAX_TARGETS - len(masks))
        fields.update(md5=data_checksum or bytes(16), src_name=spec.src_name, label=spec.label, mask=masks)
    else:
        fields["data_sum"] = data_checksum or 0
        if gen is schema.GEN04:
            fields["pad"] = bytes(4)
    return fields


def _build(struct_, fields, what):
    try:
        return struct_.build(fields)
    except ConstructError as exc:
        raise InputError("%s: %s" % (what, construct_message(exc))) from None


def validate(gen, spec):
    """Check a spec against a generation's fields and limits before anything is written."""
    what = "%s record for %s" % (schema.OP_NAMES[spec.op], spec.dst)
    targets = spec.dst.split()
    if not targets:
        raise UsageError("%s: no target (-d)" % what)
    if len(targets) > 1 and not gen.multi_target:
        raise UsageError(
            "several targets in -d (%r) need the 1.6 format; this package is %s: one record per target"
            % (spec.dst, gen.name)
        )
    if len(targets) > schema.MAX_TARGETS:
        raise UsageError("%d targets in -d, at most %d" % (len(targets), schema.MAX_TARGETS))
    if not gen.multi_target and spec.label:
        raise UsageError("-l/--add-log needs the 1.6 format; this package is %s" % gen.name)
    if not gen.multi_target and spec.masks is not None:
        raise UsageError("--default-mask needs the 1.6 format; this package is %s" % gen.name)
    if spec.masks is not None and len(spec.masks) > len(targets):
        raise UsageError("--default-mask gives %d masks for %d targets" % (len(spec.masks), len(targets)))
    if spec.data_len > gen.max_data:
        raise InputError(
            "%s: %d bytes exceed the %s format's limit of %d bytes per record" % (what, spec.data_len, gen.name, gen.max_data)
        )
    if spec.dst_size and spec.data_len > spec.dst_size and spec.op in (
        schema.OP_BLOCK, schema.OP_UBI, schema.OP_FILE_UPDATE, schema.OP_FILE_DIFF
    ):
        raise InputError(
            "%s: the image is %d bytes, larger than its target size -t %d (0x%x)"
            % (what, spec.data_len, spec.dst_size, spec.dst_size)
        )
    for name in ("dst_size", "mode"):
        value = getattr(spec, name)
        limit = gen.max_data if name == "dst_size" else schema.U32_MAX
        if not 0 <= value <= limit:
            raise InputError("%s: %s %d does not fit its field" % (what, name, value))
    try:
        return gen.record.build(_fields(gen, spec, None))
    except ConstructError as exc:
        msg = construct_message(exc)
        field_name = msg.split("->")[-1].split(":")[0].strip() if "->" in msg else "a field"
        raise InputError("%s: %s is too long for the %s format (%s)" % (what, field_name, gen.name, msg)) from None


def _write_record(f, gen, spec, raw, hashes=False):
    """Write one record at f's position: its header (raw, checksum zero), the streamed data,
    then the checksum patched into the header in place. With hashes=True, returns the
    SHA-256 of the final record header and of the data (for the manifest)."""
    start = f.tell()
    f.write(raw)
    hasher = record_hasher(gen, raw)
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
    offset, encode = _CHECKSUM_FIELD[gen.checksum]
    at = offset(gen)
    value = encode(hasher.digest())
    f.seek(start + at)
    f.write(value)
    f.seek(end)
    if not hashes:
        return None
    final = raw[:at] + value + raw[at + len(value):]
    return hashlib.sha256(final).hexdigest(), data_sha.hexdigest()


#: where each checksum kind sits in its record header, and how it is stored
_CHECKSUM_FIELD = {
    "md5": (lambda gen: schema.field_offset(gen.record, "md5"), lambda digest: digest),
    "bytesum": (lambda gen: schema.field_offset(gen.record, "data_sum"), lambda value: value.to_bytes(4, "little")),
}


# ---------------------------------------------------------------------------- headers


def script_checksum(gen, begin, end):
    """What a generation's header holds for the scripts: their byte-sum or their MD5."""
    if gen.checksum == "md5":
        return hashlib.md5(begin + end).digest()
    return checksum.bytesum(begin + end)


def build_header(gen, record_count, total_data, begin_len, end_len, script_sum, tool_id=DEFAULT_TOOL_ID):
    """The header bytes for a generation, checksums filled in.

    script_sum: script_checksum() of the scripts (appends take it from the verified header).
    """
    if total_data > gen.max_total:
        raise InputError("the package would hold %d data bytes, more than the %s format's limit %d"
                         % (total_data, gen.name, gen.max_total))
    common = dict(record_count=record_count, total_data=total_data, begin_len=begin_len, end_len=end_len)
    if gen is schema.GEN16:
        raw = _build(gen.header, dict(common, header_md5=bytes(16), script_md5=script_sum, major=1, minor=6,
                                      pad=bytes(4), tool_id=tool_id), "the 1.6 header (--tool-id)")
        return hashlib.md5(raw[16:]).digest() + raw[16:]
    raw = _build(gen.header, dict(common, header_sum=0, major=0, minor=int(gen.name[-1])), "the header")
    return checksum.bytesum(raw[4:], script_sum).to_bytes(4, "little") + raw[4:]


def _read_script(path, what):
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError("cannot read %s script %s: %s" % (what, path, exc.strerror)) from None


def _atomic_target(path):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    return fd, tmp


def _commit(tmp, path, f, sync=False):
    """Rename the finished temp file over path (fsync first with sync=True)."""
    f.flush()
    if sync:
        os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def create(path, generation="0.4", begin=None, end=None, tool_id=DEFAULT_TOOL_ID, with_manifest=False):
    """Create an empty package (header and scripts) at path, replacing it atomically."""
    build(path, [], generation, begin, end, tool_id, with_manifest=with_manifest)


def _manifest_spec(m):
    data = m.to_bytes()
    return RecordSpec(schema.OP_SCRIPT, manifest.NAME, BytesSource(data, manifest.NAME), dst_size=len(data),
                      mode=0o100644, src_name=manifest.NAME)


def _write_records(f, gen, specs, raws, m, log):
    """Write specs (and, when m is a Manifest, the updated manifest record last)."""
    for spec, raw in zip(specs, raws):
        hashes = _write_record(f, gen, spec, raw, hashes=m is not None)
        if m is not None:
            if spec.diff is not None:
                m.diffs[len(m.records)] = spec.diff
            m.records.append(hashes)
        if log:
            log("added %s %s (%d bytes)" % (schema.OP_NAMES[spec.op], spec.dst, spec.data_len))
    if m is not None:
        spec = _manifest_spec(m)
        _write_record(f, gen, spec, validate(gen, spec))


def build(path, specs, generation="0.4", begin=None, end=None, tool_id=DEFAULT_TOOL_ID, sync=False, log=None,
          with_manifest=False):
    """Write a whole package in one pass: header, scripts, then every record.

    The same bytes as create() followed by one append() per record, without the copy each
    append makes for its crash safety. with_manifest adds the sstarota manifest as the last
    record (see manifest.py).
    """
    gen = schema.GENERATIONS.get(generation)
    if gen is None:
        raise UsageError("unknown --format %r (choose 0.3, 0.4 or 1.6)" % generation)
    begin_b = _read_script(begin, "begin")
    end_b = _read_script(end, "end")
    raws = [validate(gen, spec) for spec in specs]
    m = manifest.Manifest() if with_manifest else None
    count, total = _totals(specs, m)
    header = build_header(gen, count, total, len(begin_b), len(end_b), script_checksum(gen, begin_b, end_b), tool_id)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w+b") as f:
            f.write(header)
            f.write(begin_b)
            f.write(end_b)
            _write_records(f, gen, specs, raws, m, log)
            _commit(tmp, path, f, sync)
    except BaseException:
        unlink_quietly(tmp)
        raise
    os.chmod(path, 0o644 & ~_umask())


def _totals(specs, m, count=0, total=0):
    """Record count and data total after adding specs (and the manifest, when m is given).

    The manifest's final size depends on the hashes, not their values: it is computed from
    a manifest of the same shape filled with placeholder digests."""
    count += len(specs)
    total += sum(s.data_len for s in specs)
    if m is not None:
        shape = manifest.Manifest(list(m.records), dict(m.diffs))
        for spec in specs:
            if spec.diff is not None:
                shape.diffs[len(shape.records)] = spec.diff
            shape.records.append(("0" * 64, "0" * 64))
        count += 1
        total += len(shape.to_bytes())
    return count, total


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_existing(path):
    """Open an existing raw package for appending: header and scripts verified, size checked."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError("cannot open package %s: %s" % (path, exc.strerror)) from None
    with f:
        if f.read(2) == GZIP_MAGIC:
            raise PackageError("%s is gzip-compressed; otapack appends to the raw package (gunzip it first)" % path)
        f.seek(0)
        reader = PackageReader(f, path)
        header = reader.open()
        size = os.fstat(f.fileno()).st_size
    if header.generation == schema.LEGACY:
        raise PackageError("%s is a legacy single-header package; add slots with otabinheader -a" % path)
    want = expected_size(header)
    if size != want:
        raise PackageError(
            "%s is %d bytes but its header describes %d: truncated or with trailing bytes, refusing to append"
            % (path, size, want)
        )
    return reader


def _copy(src, dst, size=None):
    """Copy the first size bytes (default all) of a package in the kernel
    (copy_file_range; reflinks where the filesystem can)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if size is None:
            size = os.fstat(fin.fileno()).st_size
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
    shutil.copymode(src, dst)


def _records_on_disk(path, header):
    """(offset, Record) of every record of a raw package, found by seeking over the data."""
    gen = header.gen
    out = []
    with open(path, "rb") as f:
        offset = gen.header_size + header.begin_len + header.end_len
        for i in range(header.record_count):
            f.seek(offset)
            raw = f.read(gen.record_size)
            try:
                r = gen.record.parse(raw)
            except ConstructError as exc:
                raise PackageError("%s: record %d header at offset %d is malformed: %s"
                                   % (path, i, offset, construct_message(exc))) from None
            out.append((offset, r))
            offset += gen.record_size + r.data_len
        last = None
        if out:
            off, r = out[-1]
            if r.op == schema.OP_SCRIPT and r.dst == manifest.NAME and r.data_len <= manifest.MAX_SIZE:
                f.seek(off + gen.record_size)
                last = f.read(r.data_len)
    return out, last


def append(path, specs, tool_id=None, log: Optional[Callable[[str], None]] = None, sync=False):
    """Append records to an existing package in its own generation, atomically.

    The package is copied next to itself, extended and renamed over the original: an
    interrupted append leaves the previous package. sync=True also fsyncs before the
    rename (durability across power loss, at the cost of writing the package to disk).
    A package with a manifest keeps it as its last record, updated.
    """
    reader = read_existing(path)
    header = reader.header
    gen = header.gen
    raws = [validate(gen, spec) for spec in specs]
    keep = os.path.getsize(path)
    count, total = header.record_count, header.total_data
    m = None
    records, last = _records_on_disk(path, header)
    if last is not None and last.startswith(manifest.MAGIC):
        m = manifest.parse(last)
        if len(m.records) != count - 1:
            raise PackageError("%s: its manifest lists %d records, the package has %d before it"
                               % (path, len(m.records), count - 1))
        keep = records[-1][0]  # the old manifest record is dropped and written anew
        count -= 1
        total -= records[-1][1].data_len
    count, total = _totals(specs, m, count, total)
    new_header = build_header(gen, count, total, header.begin_len, header.end_len,
                              script_checksum(gen, reader.begin_script, reader.end_script),
                              tool_id or header.tool_id)
    fd, tmp = _atomic_target(path)
    try:
        os.close(fd)
        _copy(path, tmp, keep)
        f = open(tmp, "r+b")
        try:
            f.seek(0, os.SEEK_END)
            _write_records(f, gen, specs, raws, m, log)
            f.seek(0)
            f.write(new_header)
            _commit(tmp, path, f, sync)
        finally:
            f.close()
    except BaseException:
        unlink_quietly(tmp)
        raise
    return count


# ---------------------------------------------------------------------------- trees


@dataclass
class TreeDiff:
    changed: List[str] = field(default_factory=list)
    added: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def _walk(root, skip_special, skipped):
    """Relative paths of the regular files under root; anything else is an error."""
    if not os.path.isdir(root):
        raise InputError("%s is not a directory" % root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = st
                continue
            kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
            if not skip_special:
                raise InputError(
                    "%s is a %s: the package format carries regular files only (remove it, or pass --skip-special)"
                    % (full, kind)
                )
            skipped.append(full)
        # os.walk does not descend into symlinked directories; they were reported above
    return found


def _same_content(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(CHUNK)
            y = fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def diff_trees(old, new, skip_special=False):
    """Compare two trees: changed, added and removed files, each sorted by path."""
    result = TreeDiff()
    old_files = _walk(old, skip_special, result.skipped)
    new_files = _walk(new, skip_special, result.skipped)
    for rel in sorted(new_files):
        if rel not in old_files:
            result.added.append(rel)
        elif old_files[rel].st_size != new_files[rel].st_size or not _same_content(
            os.path.join(old, rel), os.path.join(new, rel)
        ):
            result.changed.append(rel)
    result.removed = sorted(r for r in old_files if r not in new_files)
    return result


def join_target(prefix, rel):
    return prefix.rstrip("/") + "/" + rel


def _by_target(specs):
    return sorted(specs, key=lambda s: s.dst)


def dir_specs(old, new, prefix, use_diff=False, skip_special=False, log=None, diff_fn=None,
              threshold=None, jobs=None):
    """Records for a --dir-update / --dir-update-diff: changed, then added, then removed.

    With use_diff, the changed files' patches are made in parallel (jobs processes,
    default: one per core)."""
    d = diff_trees(old, new, skip_special)
    if log:
        for path in d.skipped:
            log("warning: skipped %s (not a regular file)" % path)
    changed = []
    if use_diff:
        pairs = [(os.path.join(old, rel), os.path.join(new, rel)) for rel in d.changed]
        patches = make_patches(pairs, diff_fn, jobs)
        for rel, (old_path, new_path), patch in zip(d.changed, pairs, patches):
            changed.append(diff_spec(old_path, new_path, join_target(prefix, rel), patch=patch,
                                     threshold=threshold, log=log))
    else:
        for rel in d.changed:
            changed.append(RecordSpec(schema.OP_FILE_UPDATE, join_target(prefix, rel),
                                      FileSource(os.path.join(new, rel)), src_name=os.path.basename(rel)))
    added = [add_spec(os.path.join(new, rel), join_target(prefix, rel)) for rel in d.added]
    removed = [delete_spec(join_target(prefix, rel)) for rel in d.removed]
    return _by_target(changed) + _by_target(added) + _by_target(removed)


def make_patches(pairs, diff_fn=None, jobs=None):
    """Patches for (old, new) path pairs, made in parallel processes when there are several."""
    fn = diff_fn or delta.make_patch
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(pairs) <= 1 or diff_fn is not None:
        return [fn(o, n) for o, n in pairs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(pairs))) as pool:
        return list(pool.map(delta.make_patch_pair, pairs))


# ---------------------------------------------------------------------------- specs


def add_spec(path, dst, op=schema.OP_FILE_ADD, label=""):
    """file-add and script-add: the mode is the source's st_mode, dst_size its length."""
    src = FileSource(path)
    return RecordSpec(op, dst, src, dst_size=src.length, mode=src.st.st_mode, src_name=src.name, label=label)


def delete_spec(dst, mode=0, dst_size=0, label=""):
    return RecordSpec(schema.OP_FILE_DELETE, dst, None, dst_size=dst_size, mode=mode,
                      src_name=os.path.basename(dst.split()[0]) if dst.split() else "", label=label)


#: a delta no smaller than this fraction of NEW is packed as a full update instead
DEFAULT_THRESHOLD = 0.95


def full_update_op(dst):
    """The op a full update of this target takes when its delta does not pay."""
    first = dst.split()[0] if dst.split() else dst
    if first.startswith("/dev/ubi"):
        return schema.OP_UBI
    if first.startswith("/dev/"):
        return schema.OP_BLOCK
    return schema.OP_FILE_UPDATE


def _digest(path):
    h = hashlib.sha256()
    n = 0
    for piece in FileSource(path).chunks():
        h.update(piece)
        n += len(piece)
    return n, h.hexdigest()


def diff_spec(old_path, new_path, dst, dst_size=0, mode=0, label="", diff_fn=None, patch=None,
              threshold=DEFAULT_THRESHOLD, log=None):
    """A file-diff record (BSDIFF40 from old to new), or a full update when the patch is not
    smaller than threshold x NEW (threshold None: always the patch)."""
    new_src = FileSource(new_path)
    FileSource(old_path)
    if dst_size and new_src.length > dst_size:
        raise InputError("%s: the new image is %d bytes, larger than its target size -t %d (0x%x)"
                         % (dst, new_src.length, dst_size, dst_size))
    if patch is None:
        patch = (diff_fn or delta.make_patch)(old_path, new_path)
    if threshold is not None and len(patch) >= threshold * new_src.length:
        op = full_update_op(dst)
        if log:
            log("%s: the patch is %d bytes, not smaller than %g%% of the new file (%d bytes): "
                "packed as a full %s instead" % (dst, len(patch), threshold * 100, new_src.length,
                                                 schema.OP_NAMES[op]))
        return RecordSpec(op, dst, new_src, dst_size=dst_size, mode=mode, src_name=new_src.name, label=label)
    old_len, old_sha = _digest(old_path)
    new_len, new_sha = _digest(new_path)
    name = os.path.basename(new_path) + ".diff"
    return RecordSpec(schema.OP_FILE_DIFF, dst, BytesSource(patch, name), dst_size=dst_size, mode=mode,
                      src_name=name, label=label, diff=manifest.DiffInfo(old_len, old_sha, new_len, new_sha))


# ---------------------------------------------------------------------------- legacy


LEGACY_SIZE = schema.LegacyHeader.sizeof()


def _legacy_build(fields):
    raw = _build(schema.LegacyHeader, dict(fields, header_sum=0), "the legacy header")
    return checksum.bytesum(raw[8:]).to_bytes(4, "little") + raw[4:]


def _empty_slot():
    return dict(data_len=0, dst="", dst_size=0, op=0, data_sum=0)


def legacy_create(path, begin=None, end=None):
    """Write a legacy single header (scripts' lengths and sums; the scripts go after it with cat)."""
    begin_b = _read_script(begin, "begin")
    end_b = _read_script(end, "end")
    raw = _legacy_build(dict(record_count=0, begin_len=len(begin_b), begin_sum=checksum.bytesum(begin_b),
                             end_len=len(end_b), end_sum=checksum.bytesum(end_b),
                             slots=[_empty_slot() for _ in range(schema.LEGACY_SLOTS)]))
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            _commit(tmp, path, f)
    except BaseException:
        unlink_quietly(tmp)
        raise
    os.chmod(path, 0o644 & ~_umask())


def legacy_append(path, src, dst, dst_size, op):
    """Fill the next legacy slot for src; rewrites only the 2584-byte header (atomically)."""
    if op not in schema.LEGACY_OPS:
        raise UsageError("-p %r: the legacy op is 0 (raw), 1 (ubi) or 2 (file)" % op)
    try:
        with open(path, "rb") as f:
            raw = f.read(LEGACY_SIZE)
    except OSError as exc:
        raise InputError("cannot open package %s: %s" % (path, exc.strerror)) from None
    if len(raw) < LEGACY_SIZE or checksum.bytesum(raw[8:]) != int.from_bytes(raw[:4], "little"):
        raise PackageError("%s is not a legacy package (no valid 2584-byte header): create it with otabinheader -c" % path)
    try:
        h = schema.LegacyHeader.parse(raw)
    except ConstructError as exc:
        raise PackageError("%s: malformed legacy header: %s" % (path, construct_message(exc))) from None
    if h.record_count >= schema.LEGACY_SLOTS:
        raise InputError("%s already holds %d records: the legacy header has only %d slots"
                         % (path, h.record_count, schema.LEGACY_SLOTS))
    source = FileSource(src)
    if source.length > schema.U32_MAX:
        raise InputError("%s is %d bytes: the legacy format holds at most %d per slot" % (src, source.length, schema.U32_MAX))
    if dst_size and source.length > dst_size:
        raise InputError("%s is %d bytes, larger than its target size -t %d (0x%x)" % (src, source.length, dst_size, dst_size))
    if dst_size > schema.U32_MAX:
        raise InputError("-t %d does not fit the legacy 32-bit size field" % dst_size)
    total = checksum.ByteSum()
    for piece in source.chunks():
        total.update(piece)
    slots = [dict(s) for s in h.slots]
    for s in slots:
        s.pop("_io", None)
    slots[h.record_count] = dict(data_len=source.length, dst=dst, dst_size=dst_size, op=op, data_sum=total.digest())
    fields = dict(record_count=h.record_count + 1, begin_len=h.begin_len, begin_sum=h.begin_sum,
                  end_len=h.end_len, end_sum=h.end_sum, slots=slots)
    try:
        new = _legacy_build(fields)
    except InputError as exc:
        raise InputError("target %r: %s (at most 63 bytes)" % (dst, exc)) from None
    fd, tmp = _atomic_target(path)
    try:
        os.close(fd)
        _copy(path, tmp)
        with open(tmp, "r+b") as f:
            f.write(new)
            _commit(tmp, path, f)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return h.record_count + 1


# ---------------------------------------------------------------------------- out-layout


def layout_lines(records):
    """--out-layout: one line per target, ``index,src_name,target,0x<mask>``."""
    lines = []
    for rec in records:
        name = rec.src_name or os.path.basename(rec.targets[0])
        for target, mask in rec.target_masks():
            lines.append("%d,%s,%s,0x%x" % (rec.index, name, target, mask))
    return lines


# ---------------------------------------------------------------------------- command-level helpers


def parse_masks(text):
    """--default-mask "1 0": one 0/1 per target, the rest default to 1."""
    masks = []
    for word in text.split():
        if word not in ("0", "1"):
            raise UsageError("--default-mask %r: each mask is 0 or 1, separated by spaces" % text)
        masks.append(int(word))
    if len(masks) > schema.MAX_TARGETS:
        raise UsageError("--default-mask gives %d masks, at most %d" % (len(masks), schema.MAX_TARGETS))
    return masks


#: the otapack operation flags and what each needs on the command line
OPERATIONS = {
    "block-update": ("s", "d"),
    "ubi-update": ("s", "d"),
    "file-update": ("s", "d"),
    "file-add": ("s", "d"),
    "file-delete": ("d",),
    "file-update-diff": ("o", "n", "d"),
    "dir-update": ("o", "n", "d"),
    "dir-update-diff": ("o", "n", "d"),
    "script-add": ("s", "d"),
}

_FLAG = {"s": "-s SOURCE", "d": "-d TARGET", "o": "-o OLD", "n": "-n NEW"}


def operation_specs(operation, src=None, dst=None, size=0, mode=0, old=None, new=None, label="",
                    masks=None, skip_special=False, log=None, diff_fn=None, threshold=DEFAULT_THRESHOLD,
                    jobs=None):
    """The records one otapack -a call adds, from the vendor's options."""
    given = {"s": src, "d": dst, "o": old, "n": new}
    missing = [_FLAG[k] for k in OPERATIONS[operation] if not given[k]]
    if missing:
        raise UsageError("--%s needs %s" % (operation, " and ".join(missing)))
    if operation in ("block-update", "ubi-update", "file-update"):
        op = {"block-update": schema.OP_BLOCK, "ubi-update": schema.OP_UBI, "file-update": schema.OP_FILE_UPDATE}[operation]
        source = FileSource(src)
        specs = [RecordSpec(op, dst, source, dst_size=size, mode=mode, src_name=source.name, label=label)]
    elif operation in ("file-add", "script-add"):
        op = schema.OP_FILE_ADD if operation == "file-add" else schema.OP_SCRIPT
        specs = [add_spec(src, dst, op, label)]
    elif operation == "file-delete":
        specs = [delete_spec(dst, mode, size, label)]
    elif operation == "file-update-diff":
        specs = [diff_spec(old, new, dst, size, mode, label, diff_fn=diff_fn, threshold=threshold, log=log)]
    else:
        specs = dir_specs(old, new, dst, use_diff=operation == "dir-update-diff", skip_special=skip_special,
                          log=log, diff_fn=diff_fn, threshold=threshold, jobs=jobs)
        for spec in specs:
            spec.label = label
    for spec in specs:
        spec.masks = masks
    return specs


def gzip_package(path, keep=False):
    """Write path + '.gz' reproducibly (no name, mtime 0, level 9) by streaming."""
    import gzip

    out = path + ".gz"
    try:
        src = open(path, "rb")
    except OSError as exc:
        raise InputError("cannot open %s: %s" % (path, exc.strerror)) from None
    fd, tmp = _atomic_target(out)
    try:
        with src, os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
                while True:
                    piece = src.read(CHUNK)
                    if not piece:
                        break
                    gz.write(piece)
            _commit(tmp, out, raw)
    except BaseException:
        unlink_quietly(tmp)
        raise
    shutil.copymode(path, out)
    if not keep:
        os.unlink(path)
    return out
