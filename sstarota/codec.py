"""Parse and build the fixed-size layouts of layout_table.py with struct, at C speed.

A `Layout` reads the compiled table (the layouts are declared in layouts.py, with construct)
and parses or builds all of a header in one struct call, then applies the field rules the
declaration states: a constant must hold its value, a text field is strict about what follows
its NUL and must leave room for one, an integer must fit its width. A broken rule is a
`LayoutError` naming the field; the callers (schema.parse and schema.build) say which header
of which package and where. No construct here: an install never imports it.
"""

import struct

from .layout_table import LAYOUTS


class LayoutError(ValueError):
    """A field of a layout broke its rule: str() is "field: what was wrong"."""

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message))
        self.field = field
        self.message = message


class Fields(dict):
    """A parsed layout: its fields by name, as items and as attributes."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _format(spec):
    """The struct format characters of one field spec (its values, in order)."""
    kind = spec[0]
    if kind == "int":
        return spec[1]
    if kind in ("bytes", "cstr"):
        return "%ds" % spec[1]
    if kind == "const":
        return spec[1]
    if kind == "array":
        return _format(spec[2]) * spec[1]
    return "".join(_format(s) for _, s in LAYOUTS[spec[1]][1])


def _width(spec):
    return struct.calcsize("<" + _format(spec))


def _decode_text(raw, field):
    text, _, rest = raw.partition(b"\0")
    if rest.strip(b"\0"):
        raise LayoutError(field, "non-zero bytes after the terminating NUL")
    return text.decode("utf-8", "surrogateescape")


def _encode_text(value, size, field):
    raw = value.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise LayoutError(field, "text contains a NUL byte")
    if len(raw) >= size:
        raise LayoutError(field, "%d bytes do not fit a %d-byte field (at most %d)" % (len(raw), size, size - 1))
    return raw


class Layout:
    """One fixed-size layout: size, field offsets, parse(bytes) -> Fields, build(dict) -> bytes."""

    def __init__(self, name):
        self.name = name
        self.size, self.fields = LAYOUTS[name]
        self._struct = struct.Struct("<" + "".join(_format(s) for _, s in self.fields))
        assert self._struct.size == self.size, name
        self._offsets = {}
        at = 0
        for field, spec in self.fields:
            self._offsets[field] = (at, _width(spec))
            at += _width(spec)

    def __repr__(self):
        return "Layout(%r)" % self.name

    def offset(self, field):
        """Byte offset of a named field."""
        return self._offsets[field][0]

    def field_size(self, field):
        return self._offsets[field][1]

    def count(self, field):
        """The element count of an array field."""
        spec = dict(self.fields)[field]
        assert spec[0] == "array", field
        return spec[1]

    # ------------------------------------------------------------------ parsing
    def parse(self, raw):
        """The fields of exactly `size` bytes (more are ignored; fewer are an error)."""
        if len(raw) < self.size:
            raise LayoutError(self.name, "needs %d bytes, got %d" % (self.size, len(raw)))
        values = iter(self._struct.unpack_from(raw))
        return self._take(self.fields, values)

    def _take(self, fields, values):
        out = Fields()
        for field, spec in fields:
            out[field] = _take_one(spec, values, field)
        return out

    # ------------------------------------------------------------------ building
    def build(self, obj):
        """The bytes of these field values; a constant may be left out."""
        flat: list = []
        _put(self.fields, obj, flat, self.name)
        try:
            return self._struct.pack(*flat)
        except struct.error:
            pass
        # which field: pack them one by one
        for field, spec in self.fields:
            part: list = []
            _put(((field, spec),), obj, part, self.name)
            try:
                struct.pack("<" + _format(spec), *part)
            except struct.error:
                raise LayoutError(field, "%r does not fit the field (%s)" % (obj.get(field), _format(spec))) from None
        raise AssertionError("unreachable: the whole did not pack but every field did")  # pragma: no cover


def _take_one(spec, values, field):
    kind = spec[0]
    if kind == "int" or kind == "bytes":
        return next(values)
    if kind == "cstr":
        return _decode_text(next(values), field)
    if kind == "const":
        got = next(values)
        if got != spec[2]:
            raise LayoutError(field, "expected %r but parsed %r" % (spec[2], got))
        return got
    if kind == "array":
        return [_take_one(spec[2], values, field) for _ in range(spec[1])]
    sub = Fields()
    for name, s in LAYOUTS[spec[1]][1]:
        sub[name] = _take_one(s, values, "%s.%s" % (field, name))
    return sub


def _put(fields, obj, flat, where):
    for field, spec in fields:
        if field in obj:
            value = obj[field]
        elif spec[0] == "const":
            value = spec[2]
        else:
            raise LayoutError(field, "no value given")
        _put_one(spec, value, flat, field)


def _put_one(spec, value, flat, field):
    kind = spec[0]
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise LayoutError(field, "%r is not an integer" % (value,))
        flat.append(value)
    elif kind == "bytes":
        if not isinstance(value, (bytes, bytearray)) or len(value) != spec[1]:
            raise LayoutError(field, "expected %d bytes, got %r" % (spec[1], value))
        flat.append(bytes(value))
    elif kind == "cstr":
        flat.append(_encode_text(value, spec[1], field))
    elif kind == "const":
        if value != spec[2]:
            raise LayoutError(field, "expected %r but got %r" % (spec[2], value))
        flat.append(value)
    elif kind == "array":
        if len(value) != spec[1]:
            raise LayoutError(field, "expected %d elements, got %d" % (spec[1], len(value)))
        for v in value:
            _put_one(spec[2], v, flat, field)
    else:
        _put(LAYOUTS[spec[1]][1], value, flat, field)
