"""The byte layouts of the package generations, declared once, with construct.

This is the declaration: every header and record layout of the legacy, 0.3, 0.4 and 1.6
generations, field by field (docs/FORMAT.md is the prose). Nothing at run time parses with
these objects: `python -m sstarota.layouts` compiles them, ahead of time, into the struct
formats of `layout_table.py` (as construct's own compile() does, but with no import of
construct left in the result), which `codec.Layout` reads and writes. tests/test_schema.py
checks that the committed table is what this module compiles to, and parses and builds the
same bytes through both, so the two cannot drift. Host only: the board bundle leaves it out.
"""

import pprint
import sys

from construct import Adapter, Array, Bytes, Const, FormatField, Int32sl, Int32ul, Int64ul, Struct, ValidationError

#: 1.6: targets with a mask per record (the vendor packs more targets, the first 16 with masks)
MAX_TARGETS = 16
#: legacy: record slots in the one header
LEGACY_SLOTS = 32


class CString(Adapter):
    """A fixed-size, NUL-padded text field, parsed to str (UTF-8, surrogateescape). Strict: every
    byte after the first NUL must be NUL. Builds only values that leave room for one NUL."""

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


# ---------------------------------------------------------------------------- legacy

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

# ---------------------------------------------------------------------------- 0.3 and 0.4


def _bytesum_header(minor, size_field):
    """The 0.3/0.4 header: one byte-sum covers bytes 4.. and both scripts."""
    return Struct(
        "header_sum" / Int32ul,  # byte-sum of the header bytes 4.. plus both scripts
        "major" / Const(0, Int32ul),
        "minor" / Const(minor, Int32ul),
        "record_count" / Int32ul,
        "total_data" / size_field,
        "begin_len" / Int32ul,
        "end_len" / Int32ul,
    )


def _bytesum_record(size_field, *tail):
    """The 0.3/0.4 record header; only data_sum (over the data alone) protects a record."""
    return Struct(
        "data_len" / size_field,
        "dst" / CString(256),
        "dst_size" / size_field,
        "mode" / Int32ul,
        "data_sum" / Int32ul,  # byte-sum of this record's data
        "op" / Int32ul,
        *tail,
    )


Header03 = _bytesum_header(3, Int32ul)
Record03 = _bytesum_record(Int32ul)
Header04 = _bytesum_header(4, Int64ul)
Record04 = _bytesum_record(Int64ul, "pad" / Const(bytes(4)))

# ---------------------------------------------------------------------------- 1.6

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
    "dst" / CString(512),  # one target, or several separated by spaces (schema.split_targets)
    "label" / CString(512),
    "dst_size" / Int64ul,
    "mode" / Int32ul,
    "mask" / Array(MAX_TARGETS, Int32sl),
    "op" / Int32ul,
)

#: every layout, by the name the table and schema.py know it by, with its size in bytes
LAYOUTS = {"LegacySlot": (LegacySlot, 80), "LegacyHeader": (LegacyHeader, 2584), "Header03": (Header03, 28),
           "Record03": (Record03, 276), "Header04": (Header04, 32), "Record04": (Record04, 288),
           "Header16": (Header16, 128), "Record16": (Record16, 1640)}

# ---------------------------------------------------------------------------- the compiler


def _element(con):
    """One field's codec spec: ("int", fmt) | ("bytes", n) | ("cstr", n) | ("const", fmt, value) |
    ("array", n, element) | ("struct", layout name)."""
    if isinstance(con, CString):
        return ("cstr", con.size)
    if isinstance(con, FormatField):
        return ("int", con.fmtstr[1:])
    if isinstance(con, Const):
        inner = _element(con.subcon)
        return ("const", inner[1] if inner[0] == "int" else "%ds" % inner[1], con.value)
    if con.__class__.__name__ == "Bytes":
        return ("bytes", con.length)
    if con.__class__.__name__ == "Array":
        return ("array", con.count, _element(con.subcon))
    if isinstance(con, Struct):
        return ("struct", next(n for n, (s, _) in LAYOUTS.items() if s is con))
    raise TypeError("no codec for %r" % con)


def compile_table():
    """{name: (size, ((field, spec), ...))}: the layouts as the codec reads them."""
    table = {}
    for name, (struct_, size) in LAYOUTS.items():
        assert struct_.sizeof() == size, name
        table[name] = (size, tuple((sub.name, _element(sub.subcon)) for sub in struct_.subcons))
    return table


def table_source():
    """The text of layout_table.py."""
    return ('"""The byte layouts compiled from sstarota/layouts.py: do not edit.\n\nRegenerate with'
            ' `python -m sstarota.layouts > sstarota/layout_table.py`; tests/test_schema.py checks it.\n"""\n\n'
            "LAYOUTS = %s\n" % pprint.pformat(compile_table(), width=116, sort_dicts=False))


if __name__ == "__main__":
    sys.stdout.write(table_source())
