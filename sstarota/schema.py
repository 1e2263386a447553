"""Every byte rule of the SigmaStar OTA package generations, declared once.

The layouts (declared in layouts.py, parsed and built by codec.Layout), what each checksum covers (for building and for verifying), how the
generations are told apart, the legacy header's validity, op names, size limits and the
gzip magic. No I/O here: the packer and the reader both build, seal and check through
these, so they cannot drift; no other module slices a header by offset. See
docs/FORMAT.md for the prose. All integers are little-endian. There is no magic number:
generations are told apart by their version words and checksums (detect_generation).
"""

import hashlib
import struct

from . import checksum, defaults
from .codec import Layout, LayoutError
from .errors import InputError, PackageError
from .recordclass import dataclass

# ---------------------------------------------------------------------------- op codes

OP_BLOCK, OP_UBI, OP_FILE_UPDATE, OP_FILE_ADD, OP_FILE_DELETE, OP_FILE_DIFF, OP_SCRIPT = range(7)

#: op code -> name used by --info, the CLI and the writers' registry
OP_NAMES = dict(enumerate(("block", "ubi", "file-update", "file-add", "file-delete", "file-diff", "script")))


def known_ops():
    """The known op codes, for messages: "0..6" (a new record kind: its op code, its name in
    OP_NAMES, a writer in sstarota/writers registered for it, a packer entry)."""
    ops = sorted(OP_NAMES)
    if ops == list(range(ops[0], ops[-1] + 1)):
        return "%d..%d" % (ops[0], ops[-1])
    return ", ".join(map(str, ops))

#: legacy single-header op codes -> the equivalent 0.3/0.4/1.6 op
LEGACY_RAW, LEGACY_UBI, LEGACY_FILE = 0, 1, 2
LEGACY_OPS = {LEGACY_RAW: OP_BLOCK, LEGACY_UBI: OP_UBI, LEGACY_FILE: OP_FILE_UPDATE}
LEGACY_OP_NAMES = {LEGACY_RAW: "raw", LEGACY_UBI: "ubi", LEGACY_FILE: "file"}

# ---------------------------------------------------------------------------- layouts
# Declared in layouts.py (construct), compiled into layout_table.py, read by codec.Layout.

LegacySlot = Layout("LegacySlot")
LegacyHeader = Layout("LegacyHeader")
Header03 = Layout("Header03")
Record03 = Layout("Record03")
Header04 = Layout("Header04")
Record04 = Layout("Record04")
Header16 = Layout("Header16")
Record16 = Layout("Record16")

LEGACY_SLOTS = LegacyHeader.count("slots")
MAX_TARGETS = Record16.count("mask")  # masks per 1.6 record; the vendor packs more targets, the first 16 with masks


def split_targets(dst):
    """1.6 targets: split on spaces only, as the vendor splits them (a tab is part of a name)."""
    return [t for t in dst.split(" ") if t]


def field_offset(layout, name):
    """Byte offset of a named field inside a layout."""
    return layout.offset(name)


assert (field_offset(Record04, "data_sum"), field_offset(Record03, "data_sum"), field_offset(Record16, "md5")) == (
    276, 268, 0)

# ---------------------------------------------------------------------------- building and parsing


def build(layout, fields, what):
    """layout.build(fields); a value that does not fit is an InputError naming what."""
    try:
        return layout.build(fields)
    except LayoutError as exc:
        raise InputError("%s: %s" % (what, exc)) from None


def parse(layout, raw, what, offset):
    """layout.parse(raw); malformed bytes are a PackageError naming what and where."""
    try:
        return layout.parse(raw)
    except LayoutError as exc:
        raise PackageError("%s at offset %d is malformed: %s" % (what, offset, exc)) from None


# ---------------------------------------------------------------------------- generations

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
GZIP_MAGIC = b"\x1f\x8b"
#: the largest script a reader holds in memory (scripts are piped into sh whole)
MAX_SCRIPT = 16 << 20  # a script record (spooled by the installer, not held)
#: the begin and end scripts (read into memory with the header that covers them)
MAX_BEGIN_END = 1 << 20
#: the most records a package may hold: otapack refuses to write more, otaunpack to read more
MAX_RECORDS = 100000


def is_gzip(head):
    """Do these first bytes of a file start a gzip stream?"""
    return head[:2] == GZIP_MAGIC


@dataclass(frozen=True)
class Generation:
    """A record-stream generation (0.3, 0.4, 1.6): its layouts, limits and checksum rules.

    Everything that differs between generations is a field or a method here; callers never
    ask which generation they hold."""

    name: str
    header: Layout
    record: Layout
    version: tuple  # the (major, minor) words
    max_data: int  # largest data length a record can declare
    max_total: int  # largest total_data the header can hold

    multi_target = False  # several targets, masks and labels per record (1.6)
    version_at = 4  # offset of the version words in the header
    checksum_field = "data_sum"  # the record header field holding the record's checksum

    @property
    def header_size(self):
        return self.header.size

    @property
    def record_size(self):
        return self.record.size

    def has_version(self, prefix):
        """Do these first bytes carry this generation's version words (at full header length)?"""
        at = self.version_at
        return len(prefix) >= self.header_size and prefix[at:at + 8] == struct.pack("<II", *self.version)

    def package_size(self, record_count, begin_len, end_len, total_data):
        """The exact size of a raw package with these header values."""
        return self.header_size + begin_len + end_len + record_count * self.record_size + total_data

    # ------------------------------------------------------------------ checksum coverage
    def record_hasher(self, raw_header):
        """The hasher a record's checksum is computed with (0.3/0.4: the data alone)."""
        return checksum.ByteSum()

    def seal_record(self, raw_header, digest):
        """The record header with its checksum field set to digest."""
        at = field_offset(self.record, self.checksum_field)
        value = digest.to_bytes(4, "little") if isinstance(digest, int) else digest
        return raw_header[:at] + value + raw_header[at + len(value):]

    def script_checksum(self, begin, end):
        """What the header holds for the scripts (0.3/0.4: their byte-sum)."""
        return checksum.bytesum(begin + end)

    def build_header(self, record_count, total_data, begin_len, end_len, script_sum, tool_id=""):
        """The header bytes, checksums filled in (script_sum: script_checksum() of the scripts)."""
        if total_data > self.max_total:
            raise InputError("the package would hold %d data bytes, more than the %s format's limit %d"
                             % (total_data, self.name, self.max_total))
        fields = dict(record_count=record_count, total_data=total_data, begin_len=begin_len, end_len=end_len)
        return self._seal_header(fields, script_sum, tool_id)

    def _seal_header(self, fields, script_sum, tool_id):
        raw = build(self.header, dict(fields, header_sum=0), "the header")
        return checksum.bytesum(raw[4:], script_sum).to_bytes(4, "little") + raw[4:]

    def header_digest_ok(self, prefix):
        """The checks on the header bytes alone (0.3/0.4 have none: their sum covers the scripts)."""
        return True

    def scripts_mismatch(self, raw_header, parsed, scripts):
        """None when the header's checksum covers these scripts, else what failed."""
        if checksum.bytesum(scripts, checksum.bytesum(raw_header[4:])) == parsed.header_sum:
            return None
        return "header checksum mismatch (byte-sum of header bytes 4..%d and the scripts)" % (self.header_size - 1)

    # ------------------------------------------------------------------ record fields
    def record_fields(self, fields, digest=None, src_name="", label="", masks=None):
        """The record header's field values: fields (data_len, dst, dst_size, mode, op) and
        the generation's own (checksum; 1.6: source name, label, masks)."""
        return dict(fields, data_sum=digest or 0)

    def stored_checksum(self, parsed):
        return parsed[self.checksum_field]

    def record_extras(self, parsed):
        """(src_name, label, masks) of a parsed record header (0.3/0.4: none)."""
        return "", "", ()


@dataclass(frozen=True)
class Md5Generation(Generation):
    """1.6: MD5s over the header, the scripts and each record (its header bytes 16.. and data)."""

    multi_target = True
    version_at = 32
    checksum_field = "md5"

    def record_hasher(self, raw_header):
        return checksum.Md5(raw_header[16:])

    def script_checksum(self, begin, end):
        return hashlib.md5(begin + end).digest()

    def _seal_header(self, fields, script_sum, tool_id):
        raw = build(self.header, dict(fields, header_md5=bytes(16), script_md5=script_sum, tool_id=tool_id),
                    "the 1.6 header (--tool-id)")
        return hashlib.md5(raw[16:]).digest() + raw[16:]

    def header_digest_ok(self, prefix):
        return hashlib.md5(prefix[16:self.header_size]).digest() == prefix[:16]

    def scripts_mismatch(self, raw_header, parsed, scripts):
        if hashlib.md5(scripts).digest() == parsed.script_md5:
            return None
        return "script checksum mismatch (MD5 of begin+end scripts)"

    def record_fields(self, fields, digest=None, src_name="", label="", masks=None):
        masks = list(masks or [])
        masks += [1] * (MAX_TARGETS - len(masks))
        return dict(fields, md5=digest or bytes(16), src_name=src_name, label=label, mask=masks)

    def record_extras(self, parsed):
        return parsed.src_name, parsed.label, tuple(parsed.mask)


GEN03 = Generation("0.3", Header03, Record03, (0, 3), U32_MAX, U32_MAX)
GEN04 = Generation("0.4", Header04, Record04, (0, 4), U64_MAX, U64_MAX)
GEN16 = Md5Generation("1.6", Header16, Record16, (1, 6), U64_MAX, U64_MAX)

GENERATIONS = {g.name: g for g in (GEN03, GEN04, GEN16)}
#: what otapack -c makes without --format (the 2021 SDK trees' generation)
DEFAULT_GENERATION = defaults.DEFAULT_GENERATION  # otapack -c's, declared in defaults.py

# ---------------------------------------------------------------------------- legacy rules

#: the name used for the single-header generation (it has no Generation record stream)
LEGACY = "legacy"
LEGACY_SIZE = LegacyHeader.size


def legacy_sum_ok(raw):
    """The legacy header's one checksum: the byte-sum of bytes 8..2583 in its first word."""
    return len(raw) >= LEGACY_SIZE and int.from_bytes(raw[:4], "little") == checksum.bytesum(raw[8:LEGACY_SIZE])


def legacy_sum(data=b""):
    """The checksum a legacy header holds for each script and each slot's data: their
    byte-sum, as an incremental hasher (update(), digest())."""
    return checksum.ByteSum(data)


def build_legacy_header(fields):
    """The 2584-byte legacy header for fields (record_count, scripts' lengths and sums, slots)."""
    raw = build(LegacyHeader, dict(fields, header_sum=0), "the legacy header")
    return checksum.bytesum(raw[8:]).to_bytes(4, "little") + raw[4:]


def legacy_package_size(begin_len, end_len, total_data):
    return LEGACY_SIZE + begin_len + end_len + total_data


# ---------------------------------------------------------------------------- detection


def detect_generation(prefix):
    """Tell the generation's name from the first bytes of a package (up to 2584 of them).

    No magic number: 1.6 by its words (1, 6) at offset 32 and its header MD5; legacy by its
    byte-sum of bytes 8..2583 and at most 32 records; 0.3/0.4 by (0, 3)/(0, 4) at offset 4.
    """
    if GEN16.has_version(prefix):
        if not GEN16.header_digest_ok(prefix):
            raise PackageError("1.6 header checksum mismatch (MD5 of bytes 16..127): the header is corrupt")
        return GEN16.name
    if legacy_sum_ok(prefix) and int.from_bytes(prefix[4:8], "little") <= LEGACY_SLOTS:
        return LEGACY
    for gen in (GEN03, GEN04):
        if gen.has_version(prefix):
            return gen.name
    if is_gzip(prefix):
        raise PackageError("gzip data where a raw package was expected: use -x (or gunzip it first)")
    if len(prefix) < GEN03.header_size:
        raise PackageError("too short for any package header (%d bytes)" % len(prefix))
    raise PackageError("not a SigmaStar OTA package: no known version words (0.3, 0.4, 1.6) and no valid legacy header")
