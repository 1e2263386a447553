"""Every byte layout of the SigmaStar OTA package generations, declared once.

No I/O here: the packer (pack.py) and the reader (package.py) both build and parse
through these structs, so they cannot drift. See docs/FORMAT.md for the prose.
All integers are little-endian. There is no magic number: generations are told apart
by their version words and checksums (package.detect_generation).
"""

from dataclasses import dataclass

from construct import (
    Adapter,
    Array,
    Bytes,
    Const,
    Int32sl,
    Int32ul,
    Int64ul,
    Struct,
    ValidationError,
)


class CString(Adapter):
    """A fixed-size, NUL-padded text field.

    Parses to str (UTF-8, undecodable bytes kept via surrogateescape). Strict: every byte
    after the first NUL must be NUL too. Builds only values that leave room for one NUL.
    """

    def __init__(self, size):
        super().__init__(Bytes(size))
        self.size = size

    def _decode(self, obj, context, path):
        text, nul, rest = obj.partition(b"\0")
        if rest.strip(b"\0"):
            raise ValidationError("non-zero bytes after the terminating NUL", path=path)
        return text.decode("utf-8", "surrogateescape")

    def _encode(self, obj, context, path):
        raw = obj.encode("utf-8", "surrogateescape")
        if b"\0" in raw:
            raise ValidationError("text contains a NUL byte", path=path)
        if len(raw) >= self.size:
            raise ValidationError(
                "%d bytes do not fit a %d-byte field (at most %d)" % (len(raw), self.size, self.size - 1),
                path=path,
            )
        return raw.ljust(self.size, b"\0")


# ---------------------------------------------------------------------------- op codes

OP_BLOCK, OP_UBI, OP_FILE_UPDATE, OP_FILE_ADD, OP_FILE_DELETE, OP_FILE_DIFF, OP_SCRIPT = range(7)

#: op code -> name used by --info, the CLI and the writers' registry
OP_NAMES = {
    OP_BLOCK: "block",
    OP_UBI: "ubi",
    OP_FILE_UPDATE: "file-update",
    OP_FILE_ADD: "file-add",
    OP_FILE_DELETE: "file-delete",
    OP_FILE_DIFF: "file-diff",
    OP_SCRIPT: "script",
}

#: legacy single-header op codes -> the equivalent 0.3/0.4/1.6 op
LEGACY_RAW, LEGACY_UBI, LEGACY_FILE = 0, 1, 2
LEGACY_OPS = {LEGACY_RAW: OP_BLOCK, LEGACY_UBI: OP_UBI, LEGACY_FILE: OP_FILE_UPDATE}
LEGACY_OP_NAMES = {LEGACY_RAW: "raw", LEGACY_UBI: "ubi", LEGACY_FILE: "file"}

# ---------------------------------------------------------------------------- legacy

LEGACY_SLOTS = 32

LegacySlot = Struct(
    "data_len" / Int32ul,
    "dst" / CString(64),
    "dst_size" / Int32ul,
    "op" / Int32ul,
    "data_sum" / Int32ul,
)

LegacyHeader = Struct(
    "header_sum" / Int32ul,  # byte-sum of bytes 8..2583
    "record_count" / Int32ul,  # 0..32, outside the sum
    "begin_len" / Int32ul,
    "begin_sum" / Int32ul,
    "end_len" / Int32ul,
    "end_sum" / Int32ul,
    "slots" / Array(LEGACY_SLOTS, LegacySlot),
)

# ---------------------------------------------------------------------------- 0.3

Header03 = Struct(
    "header_sum" / Int32ul,  # byte-sum of bytes 4..27 plus both scripts
    "major" / Const(0, Int32ul),
    "minor" / Const(3, Int32ul),
    "record_count" / Int32ul,
    "total_data" / Int32ul,
    "begin_len" / Int32ul,
    "end_len" / Int32ul,
)

Record03 = Struct(
    "data_len" / Int32ul,
    "dst" / CString(256),
    "dst_size" / Int32ul,
    "mode" / Int32ul,
    "data_sum" / Int32ul,  # byte-sum of this record's data
    "op" / Int32ul,
)

# ---------------------------------------------------------------------------- 0.4

Header04 = Struct(
    "header_sum" / Int32ul,  # byte-sum of bytes 4..31 plus both scripts
    "major" / Const(0, Int32ul),
    "minor" / Const(4, Int32ul),
    "record_count" / Int32ul,
    "total_data" / Int64ul,
    "begin_len" / Int32ul,
    "end_len" / Int32ul,
)

Record04 = Struct(
    "data_len" / Int64ul,
    "dst" / CString(256),
    "dst_size" / Int64ul,
    "mode" / Int32ul,
    "data_sum" / Int32ul,
    "op" / Int32ul,
    "pad" / Const(bytes(4)),
)

# ---------------------------------------------------------------------------- 1.6

MAX_TARGETS = 16

Header16 = Struct(
    "header_md5" / Bytes(16),  # MD5 of bytes 16..127
    "script_md5" / Bytes(16),  # MD5 of begin + end script bytes
    "major" / Const(1, Int32ul),
    "minor" / Const(6, Int32ul),
    "record_count" / Int32ul,
    "pad" / Const(bytes(4)),
    "total_data" / Int64ul,
    "begin_len" / Int32ul,
    "end_len" / Int32ul,
    "tool_id" / CString(64),
)

Record16 = Struct(
    "md5" / Bytes(16),  # MD5 of record bytes 16..1639 followed by the data
    "data_len" / Int64ul,
    "src_name" / CString(512),
    "dst" / CString(512),  # one target, or several separated by spaces (max 16)
    "label" / CString(512),
    "dst_size" / Int64ul,
    "mode" / Int32ul,
    "mask" / Array(MAX_TARGETS, Int32sl),
    "op" / Int32ul,
)

assert LegacySlot.sizeof() == 80
assert LegacyHeader.sizeof() == 2584
assert Header03.sizeof() == 28
assert Record03.sizeof() == 276
assert Header04.sizeof() == 32
assert Record04.sizeof() == 288
assert Header16.sizeof() == 128
assert Record16.sizeof() == 1640


def field_offset(struct_, name):
    """Byte offset of a named field inside a fixed-size Struct."""
    offset = 0
    for sub in struct_.subcons:
        if sub.name == name:
            return offset
        offset += sub.sizeof()
    raise KeyError(name)


assert field_offset(Record04, "data_sum") == 276
assert field_offset(Record03, "data_sum") == 268
assert field_offset(Record16, "md5") == 0

# ---------------------------------------------------------------------------- generations


@dataclass(frozen=True)
class Generation:
    """What differs between the record-stream generations (0.3, 0.4, 1.6)."""

    name: str
    header: Struct
    record: Struct
    checksum: str  # "bytesum" or "md5"
    max_data: int  # largest data length a record can declare
    max_total: int  # largest total_data the header can hold

    @property
    def header_size(self):
        return self.header.sizeof()

    @property
    def record_size(self):
        return self.record.sizeof()

    @property
    def multi_target(self):
        return self is GEN16


U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

GEN03 = Generation("0.3", Header03, Record03, "bytesum", U32_MAX, U32_MAX)
GEN04 = Generation("0.4", Header04, Record04, "bytesum", U64_MAX, U64_MAX)
GEN16 = Generation("1.6", Header16, Record16, "md5", U64_MAX, U64_MAX)

GENERATIONS = {g.name: g for g in (GEN03, GEN04, GEN16)}

#: the name used for the single-header generation (it has no Generation record stream)
LEGACY = "legacy"
