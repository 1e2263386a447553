"""A package as header + scripts + records, read front to back from any stream.

The reader never seeks: it works on a gzip pipe or stdin as well as on a file. Fixed-size
headers are parsed with the construct schema from bounded reads; record payloads are
streamed in chunks through incremental hashers. Every count, length and checksum is
checked, and so is the end of the stream: a truncated or overlong package never reads as
complete.
"""

from __future__ import annotations

import os
import zlib

from . import schema
from .errors import PackageError
from .recordclass import TYPE_CHECKING, dataclass
from .sources import FileSource, GzipCorrupt
from .schema import MAX_SCRIPT, detect_generation  # noqa: F401  (part of the reader's interface)

if TYPE_CHECKING:
    from typing import Optional, Union

CHUNK = 128 << 10  # read size: small enough for a 64 MB board, large enough for speed
#: what reading a (possibly gzip) stream can raise besides our own errors
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class Header:
    """A verified package header. generation names it; format is its schema.Generation."""

    generation: str  # "legacy", "0.3", "0.4" or "1.6"
    record_count: int
    total_data: int
    begin_len: int
    end_len: int
    raw: bytes
    tool_id: str = ""
    parsed: object = None

    @property
    def format(self) -> Optional[schema.Generation]:
        """The byte layouts and checksum rules of a 0.3/0.4/1.6 header (None for legacy)."""
        return schema.GENERATIONS.get(self.generation)

    def package_size(self):
        """The exact size of a raw package with this header."""
        if self.format is None:
            return schema.legacy_package_size(self.begin_len, self.end_len, self.total_data)
        return self.format.package_size(self.record_count, self.begin_len, self.end_len, self.total_data)


@dataclass
class Record:
    index: int
    op: int
    dst: str
    data_len: int
    dst_size: int = 0
    mode: int = 0
    src_name: str = ""
    label: str = ""
    masks: tuple = ()
    checksum: Union[int, bytes] = 0  # int for byte-sums, bytes for MD5
    raw_header: bytes = b""  # the record header as stored (empty for legacy slots)
    offset: int = 0  # offset of the record header (legacy: of the data) in the stream
    legacy_op: Optional[int] = None
    ok: Optional[bool] = None  # checksum verdict once the data has been read

    @property
    def op_name(self):
        if self.legacy_op is not None:
            return schema.LEGACY_OP_NAMES.get(self.legacy_op, str(self.legacy_op))
        return schema.OP_NAMES.get(self.op, str(self.op))

    @property
    def targets(self):
        """The targets of this record: 1.6 packs several into dst, separated by spaces (and
        only spaces: schema.split_targets); 0.3/0.4/legacy dst is one target, as it stands."""
        if self.masks:
            return schema.split_targets(self.dst)
        return [self.dst]

    def target_masks(self):
        """(target, mask) pairs; a generation without masks writes every target. The vendor
        packs more than 16 targets but a record has 16 masks: targets 17+ get mask None."""
        targets = self.targets
        if not self.masks:
            return [(t, 1) for t in targets]
        return [(t, self.masks[i] if i < len(self.masks) else None) for i, t in enumerate(targets)]

    def unmasked_targets(self):
        """The targets beyond the 16 masks (what the vendor's board tool reads as their mask
        is undefined; see docs/FORMAT.md for what otaunpack does with them)."""
        return [t for t, m in self.target_masks() if m is None]

    def checksum_text(self):
        if isinstance(self.checksum, bytes):
            return self.checksum.hex()
        return "0x%08x" % self.checksum


class PackageReader:
    """Reads one package front to back.

    >>> r = PackageReader(stream); r.open()        # header + scripts, checksums verified
    >>> for rec, chunks in r.records(): ...        # chunks: generator of data pieces
    >>> r.finish()                                 # the stream must end here

    A record's checksum is checked when its last chunk has been read; with strict=True a
    mismatch raises PackageError, otherwise it is recorded in rec.ok. Records not consumed
    by the caller are read (and checked) before the next one.
    """

    def __init__(self, stream, name="package", strict=True, chunk=CHUNK, checksums=True):
        self.stream = stream
        self.name = name
        self.strict = strict
        self.checksums = checksums  # False: record data is not checksummed (headers and scripts still are)
        self.chunk = chunk
        self.offset = 0
        self._pending = b""
        self.header: Optional[Header] = None
        self.begin_script = b""
        self.end_script = b""
        self._slots = []
        self._current = None

    # ------------------------------------------------------------------ raw reads
    def _read_error(self, what, offset, exc):
        """One line for a stream that fails: the gzip layer is named as such."""
        if isinstance(exc, GzipCorrupt):
            return PackageError("%s: %s, %d bytes into the package" % (self.name, exc, offset))
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return PackageError("%s: cannot read %s at offset %d: %s" % (self.name, what, offset, text))

    def _read_some(self, n):
        if self._pending:
            piece, self._pending = self._pending[:n], self._pending[n:]
            return piece
        return self.stream.read(n)

    def _read_exact(self, n, what):
        parts = []
        got = 0
        while got < n:
            try:
                piece = self._read_some(min(n - got, self.chunk))
            except _READ_ERRORS as exc:
                raise self._read_error(what, self.offset + got, exc) from None
            if not piece:
                raise PackageError(
                    "%s is truncated: %s at offset %d needs %d bytes, the stream ends after %d"
                    % (self.name, what, self.offset, n, got)
                )
            parts.append(piece)
            got += len(piece)
        self.offset += n
        return b"".join(parts)

    def _stream_exact(self, n, what):
        left = n
        while left:
            try:
                piece = self._read_some(min(left, self.chunk))
            except _READ_ERRORS as exc:
                raise self._read_error(what, self.offset, exc) from None
            if not piece:
                raise PackageError(
                    "%s is truncated: %s needs %d more bytes at offset %d" % (self.name, what, left, self.offset)
                )
            self.offset += len(piece)
            left -= len(piece)
            yield piece

    # ------------------------------------------------------------------ header
    def open(self):
        prefix = b""
        want = schema.LEGACY_SIZE
        while len(prefix) < want:
            try:
                piece = self.stream.read(want - len(prefix))
            except _READ_ERRORS as exc:
                raise self._read_error("the header", 0, exc) from None
            if not piece:
                break
            prefix += piece
        self._pending = prefix
        generation = detect_generation(prefix)
        if generation == schema.LEGACY:
            self._open_legacy()
        else:
            self._open_stream_header(schema.GENERATIONS[generation])
        return self.header

    def _read_script(self, length, what):
        if length > schema.MAX_BEGIN_END:
            raise PackageError(
                "%s: the %s declares %d bytes, more than the %d MiB limit for begin and end scripts"
                % (self.name, what, length, schema.MAX_BEGIN_END >> 20)
            )
        return self._read_exact(length, what)

    def _open_stream_header(self, gen):
        raw = self._read_exact(gen.header_size, "the %s header" % gen.name)
        h = schema.parse(gen.header, raw, "the %s header" % gen.name, 0)
        if h.record_count > schema.MAX_RECORDS:
            raise PackageError("%s: the header declares %d records, more than the %d a package may hold"
                               % (self.name, h.record_count, schema.MAX_RECORDS))
        self.header = Header(gen.name, h.record_count, h.total_data, h.begin_len, h.end_len, raw,
                             getattr(h, "tool_id", ""), h)
        self.begin_script = self._read_script(h.begin_len, "begin script")
        self.end_script = self._read_script(h.end_len, "end script")
        mismatch = gen.scripts_mismatch(raw, h, self.begin_script + self.end_script)
        if mismatch:
            raise PackageError("%s: %s" % (self.name, mismatch))

    def _open_legacy(self):
        raw = self._read_exact(schema.LEGACY_SIZE, "the legacy header")
        h = schema.parse(schema.LegacyHeader, raw, "the legacy header", 0)
        count = h.record_count
        for i, slot in enumerate(h.slots):
            if i >= count:
                if slot.data_len or slot.dst or slot.dst_size or slot.op or slot.data_sum:
                    raise PackageError("%s: legacy slot %d is beyond the record count %d but not empty" % (self.name, i, count))
                continue
            if slot.op not in schema.LEGACY_OPS:
                raise PackageError("%s: legacy slot %d has unknown op %d (0 raw, 1 ubi, 2 file)" % (self.name, i, slot.op))
            if not slot.dst:
                raise PackageError("%s: legacy slot %d has an empty target" % (self.name, i))
        total = sum(s.data_len for s in h.slots[:count])
        self.header = Header(schema.LEGACY, count, total, h.begin_len, h.end_len, raw, "", h)
        self.begin_script = self._read_script(h.begin_len, "begin script")
        if schema.legacy_sum(self.begin_script).digest() != h.begin_sum:
            raise PackageError("%s: begin script checksum mismatch (legacy byte-sum)" % self.name)
        self.end_script = self._read_script(h.end_len, "end script")
        if schema.legacy_sum(self.end_script).digest() != h.end_sum:
            raise PackageError("%s: end script checksum mismatch (legacy byte-sum)" % self.name)
        self._slots = list(h.slots[:count])

    # ------------------------------------------------------------------ records
    def records(self):
        """Yield (Record, chunks) for every record, in stream order."""
        if self.header is None:
            self.open()
        assert self.header is not None  # open() reads it or raises
        if self.header.generation == schema.LEGACY:
            yield from self._legacy_records()
        else:
            yield from self._stream_records()

    def _legacy_records(self):
        for i, slot in enumerate(self._slots):
            rec = Record(i, schema.LEGACY_OPS[slot.op], slot.dst, slot.data_len, slot.dst_size, 0,
                         checksum=slot.data_sum, offset=self.offset, legacy_op=slot.op)
            yield from self._with_data(rec, schema.legacy_sum())

    def _stream_records(self):
        assert self.header is not None and self.header.format is not None  # a 0.3/0.4/1.6 header, read
        gen = self.header.format
        remaining = self.header.total_data
        for i in range(self.header.record_count):
            where = self.offset
            raw = self._read_exact(gen.record_size, "record %d header" % (i + 1))
            r = schema.parse(gen.record, raw, "record %d header" % (i + 1), where)
            src_name, label, masks = gen.record_extras(r)
            rec = Record(i, r.op, r.dst, r.data_len, r.dst_size, r.mode, src_name=src_name, label=label,
                         masks=masks, checksum=gen.stored_checksum(r), raw_header=raw, offset=where)
            self._check_record(rec, remaining, where)
            remaining -= rec.data_len
            yield from self._with_data(rec, gen.record_hasher(raw))
        if remaining:
            raise PackageError(
                "%s: the header declares %d data bytes but the records hold %d"
                % (self.name, self.header.total_data, self.header.total_data - remaining)
            )

    def _check_record(self, rec, remaining, where):
        """Structural checks: all that protects a 0.3/0.4 record header."""
        what = "%s: record %d (offset %d)" % (self.name, rec.index + 1, where)
        if rec.op not in schema.OP_NAMES:
            raise PackageError("%s has unknown op code %d (known: %s)" % (what, rec.op, schema.known_ops()))
        if rec.data_len > remaining:
            raise PackageError(
                "%s declares %d data bytes, more than the %d the header has left" % (what, rec.data_len, remaining)
            )
        if not rec.dst.strip():
            raise PackageError("%s has an empty target" % what)
        if rec.op == schema.OP_FILE_DELETE and rec.data_len:
            raise PackageError("%s is a file-delete carrying %d data bytes" % (what, rec.data_len))
        if rec.masks:
            if any(m not in (0, 1) for m in rec.masks):
                raise PackageError("%s has a mask other than 0 or 1: %s" % (what, list(rec.masks)))

    def _with_data(self, rec, hasher):
        gen_done = [False]

        check = self.checksums

        def chunks():
            for piece in self._stream_exact(rec.data_len, "record %d data (%s)" % (rec.index + 1, rec.dst)):
                if check:
                    hasher.update(piece)
                yield piece
            gen_done[0] = True
            if not check:
                return
            rec.ok = hasher.digest() == rec.checksum
            if not rec.ok and self.strict:
                raise PackageError(
                    "%s: record %d (%s %s) checksum mismatch: stored %s, data gives %s"
                    % (self.name, rec.index + 1, rec.op_name, rec.dst, rec.checksum_text(), hasher.hexdigest())
                )

        it = chunks()
        yield rec, it
        if not gen_done[0]:
            for _ in it:
                pass

    def finish(self):
        """Check that the stream ends exactly here."""
        try:
            extra = self._read_some(1)
        except _READ_ERRORS as exc:
            raise self._read_error("past the last record", self.offset, exc) from None
        if extra:
            raise PackageError(
                "%s has trailing bytes after the last record (at offset %d): not a complete package"
                % (self.name, self.offset)
            )


def read_all(reader):
    """Read every record of an opened-or-not reader to the end; return the records."""
    records = []
    for rec, chunks in reader.records():
        for _ in chunks:
            pass
        records.append(rec)
    reader.finish()
    return records


def scan(path, strict=False):
    """Read a whole package (raw or gzip); return (reader, records). Used by --info and -r."""
    with FileSource(path) as source, source.stream() as stream:
        reader = PackageReader(stream, os.path.basename(path), strict=strict)
        return reader, read_all(reader)
