"""Round trips for every struct of the schema, and the byte-sum's exactness."""

import hashlib
import struct
from pathlib import Path

import pytest
from construct import ConstructError
from hypothesis import given, settings
from hypothesis import strategies as st

from sstarota import checksum, codec, defaults, layouts, package, schema

u32 = st.integers(0, schema.U32_MAX)
u64 = st.integers(0, schema.U64_MAX)
s32 = st.integers(-(1 << 31), (1 << 31) - 1)


def text(max_bytes):
    return st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=max_bytes)


def declared(layout):
    """The construct declaration a codec layout is compiled from."""
    return layouts.LAYOUTS[layout.name][0]


def roundtrip(layout, obj):
    """parse(build(obj)) == obj, build(parse(b)) == b, len == size; the same bytes and
    fields through the construct declaration."""
    raw = layout.build(obj)
    assert len(raw) == layout.size and raw == declared(layout).build(obj)
    parsed = layout.parse(raw)
    for key, value in obj.items():
        got = parsed[key]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            got = [{k: g[k] for k in v} for g, v in zip(got, value)]
        assert got == value == getattr(parsed, key), key
    assert layout.build(parsed) == raw
    assert plain(declared(layout).parse(raw)) == plain(parsed)


def plain(value):
    """A parse result as plain dicts and lists (construct's Containers carry private keys)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_the_committed_table_is_what_the_declaration_compiles_to():
    """layout_table.py is generated: `python -m sstarota.layouts > sstarota/layout_table.py`."""
    assert (Path(codec.__file__).parent / "layout_table.py").read_text() == layouts.table_source()


ALL = [schema.LegacySlot, schema.LegacyHeader, schema.Header03, schema.Record03, schema.Header04, schema.Record04,
       schema.Header16, schema.Record16]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_any_bytes_parse_as_the_declaration_parses_them(layout, data):
    """Differential: bytes near a valid header (a built one with a few bytes changed) and random
    ones are accepted or refused alike by the codec and by construct, with the same fields."""
    base = bytearray(layout.build(data.draw(valid(layout))))
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            base[data.draw(st.integers(0, layout.size - 1))] = data.draw(st.integers(0, 255))
    else:
        base = bytearray(data.draw(st.binary(min_size=layout.size, max_size=layout.size)))
    try:
        want = plain(declared(layout).parse(bytes(base)))
    except ConstructError:
        with pytest.raises(codec.LayoutError):
            layout.parse(bytes(base))
        return
    assert plain(layout.parse(bytes(base))) == want


def valid(layout):
    """Field values that build, for any layout."""
    def value(spec):
        kind = spec[0]
        if kind == "int":
            bits = 8 * struct.calcsize("<" + spec[1])
            return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if spec[1].islower() else \
                st.integers(0, (1 << bits) - 1)
        if kind == "bytes":
            return st.binary(min_size=spec[1], max_size=spec[1])
        if kind == "cstr":
            return text(spec[1] - 1)
        if kind == "const":
            return st.just(spec[2])
        if kind == "array":
            return st.lists(value(spec[2]), min_size=spec[1], max_size=spec[1])
        return fields(codec.LAYOUTS[spec[1]][1])

    def fields(specs):
        return st.fixed_dictionaries({name: value(spec) for name, spec in specs})
    return fields(layout.fields)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_values_that_do_not_fit_are_refused_as_the_declaration_refuses_them(layout, data):
    """Differential on building: one field out of its range (an integer too wide or negative, a
    text too long or with a NUL, bytes of the wrong length) fails both ways, naming the field."""
    obj = data.draw(valid(layout))
    name, spec = data.draw(st.sampled_from([f for f in layout.fields if f[1][0] in ("int", "cstr", "bytes")]))
    bad = {"int": st.sampled_from([-1 << 70, -1, 1 << 64, 1 << 32]), "cstr": st.sampled_from(["a\0b", "x" * 600]),
           "bytes": st.sampled_from([b"", b"x" * 17])}[spec[0]]
    obj[name] = data.draw(bad)
    try:
        want = declared(layout).build(obj)
    except ConstructError:
        with pytest.raises(codec.LayoutError) as exc:
            layout.build(obj)
        assert exc.value.field == name
        return
    assert layout.build(obj) == want


slot = st.fixed_dictionaries(dict(data_len=u32, dst=text(63), dst_size=u32, op=u32, data_sum=u32))


@settings(max_examples=50)
@given(st.fixed_dictionaries(dict(header_sum=u32, record_count=u32, begin_len=u32, begin_sum=u32, end_len=u32,
                                  end_sum=u32, slots=st.lists(slot, min_size=32, max_size=32))))
def test_legacy_header_roundtrip(obj):
    roundtrip(schema.LegacyHeader, obj)


@given(slot)
def test_legacy_slot_roundtrip(obj):
    roundtrip(schema.LegacySlot, obj)


@given(st.fixed_dictionaries(dict(header_sum=u32, record_count=u32, total_data=u32, begin_len=u32, end_len=u32)))
def test_header03_roundtrip(obj):
    roundtrip(schema.Header03, dict(obj, major=0, minor=3))


@given(st.fixed_dictionaries(dict(data_len=u32, dst=text(255), dst_size=u32, mode=u32, data_sum=u32, op=u32)))
def test_record03_roundtrip(obj):
    roundtrip(schema.Record03, obj)


@given(st.fixed_dictionaries(dict(header_sum=u32, record_count=u32, total_data=u64, begin_len=u32, end_len=u32)))
def test_header04_roundtrip(obj):
    roundtrip(schema.Header04, dict(obj, major=0, minor=4))


@given(st.fixed_dictionaries(dict(data_len=u64, dst=text(255), dst_size=u64, mode=u32, data_sum=u32, op=u32)))
def test_record04_roundtrip(obj):
    roundtrip(schema.Record04, dict(obj, pad=bytes(4)))


@given(st.fixed_dictionaries(dict(header_md5=st.binary(min_size=16, max_size=16),
                                  script_md5=st.binary(min_size=16, max_size=16), record_count=u32,
                                  total_data=u64, begin_len=u32, end_len=u32, tool_id=text(63))))
def test_header16_roundtrip(obj):
    roundtrip(schema.Header16, dict(obj, major=1, minor=6, pad=bytes(4)))


@given(st.fixed_dictionaries(dict(md5=st.binary(min_size=16, max_size=16), data_len=u64, src_name=text(511),
                                  dst=text(511), label=text(511), dst_size=u64, mode=u32,
                                  mask=st.lists(s32, min_size=16, max_size=16), op=u32)))
def test_record16_roundtrip(obj):
    roundtrip(schema.Record16, obj)


def test_cstring_rejects_garbage_after_nul_and_overlong_values():
    raw = bytearray(schema.Record04.build(dict(data_len=0, dst="/a", dst_size=0, mode=0, data_sum=0, op=0,
                                               pad=bytes(4))))
    raw[8 + 10] = 1  # a byte after the NUL of dst
    with pytest.raises(codec.LayoutError) as exc:
        schema.Record04.parse(bytes(raw))
    assert exc.value.field == "dst"
    with pytest.raises(codec.LayoutError) as exc:
        schema.Record04.build(dict(data_len=0, dst="x" * 256, dst_size=0, mode=0, data_sum=0, op=0, pad=bytes(4)))
    assert exc.value.field == "dst"


@given(st.binary(max_size=140000), u32)
@settings(max_examples=30, deadline=None)
def test_bytesum_equals_plain_sum(data, start):
    assert checksum.bytesum(data, start) == (start + sum(data)) & 0xFFFFFFFF


#: lengths at the edges of the byte-sum's 4 KiB pieces and 65520-byte chunks
EDGES = [0, 1, 4095, 4096, 4097, 65519, 65520, 65521, 65520 + 4096, 131039, 131040, 131041, 3 * 65520 + 7]


@given(st.sampled_from(EDGES), st.integers(0, 255), st.binary(max_size=300), st.integers(0, 9), u32,
       st.integers(0, 3 * 65520 + 7))
@settings(max_examples=60, deadline=None)
def test_bytesum_at_edge_lengths_equals_plain_sum(length, fill, noise, offset, start, cut):
    """Mostly one byte value (0xff is the worst case for the chunk bound), some noise, read
    through a memoryview at an offset as the reader hands it over, whole and in two updates."""
    buf = bytearray([fill]) * (offset + length)
    buf[offset:offset + len(noise)] = noise[:length]
    data = memoryview(buf)[offset:]
    plain = (start + sum(data)) & 0xFFFFFFFF
    assert checksum.bytesum(data, start) == plain
    cut = min(cut, length)
    h = checksum.ByteSum(start=start)
    h.update(data[:cut])
    h.update(data[cut:])
    assert h.digest() == plain


def test_bytesum_worst_case_chunks():
    data = b"\xff" * (65520 * 3 + 7)
    assert checksum.bytesum(data) == sum(data) & 0xFFFFFFFF
    h = checksum.ByteSum()
    for i in range(0, len(data), 1000):
        h.update(data[i:i + 1000])
    assert h.digest() == sum(data) & 0xFFFFFFFF


@given(st.sampled_from(["0.3", "0.4", "1.6"]), st.integers(0, schema.MAX_RECORDS), st.binary(max_size=200),
       st.binary(max_size=200))
def test_built_headers_are_detected_and_verify(name, count, begin, end):
    """(Counts above schema.MAX_RECORDS are refused by the reader: test_hardening.)"""
    import io

    gen = schema.GENERATIONS[name]
    total = count
    raw = gen.build_header(count, total, len(begin), len(end), gen.script_checksum(begin, end), "t")
    assert package.detect_generation(raw + begin + end) == name
    reader = package.PackageReader(io.BytesIO(raw + begin + end))
    header = reader.open()
    assert (header.record_count, header.total_data, reader.begin_script, reader.end_script) == (count, total, begin, end)
    if name == "1.6":
        assert raw[:16] == hashlib.md5(raw[16:]).digest()


def test_the_generations_otapack_offers_are_the_schemas():
    """otapack --help reads the names from defaults.py (no construct); the layouts are schema's."""
    assert tuple(schema.GENERATIONS) == defaults.GENERATION_NAMES
    assert schema.DEFAULT_GENERATION == defaults.DEFAULT_GENERATION in schema.GENERATIONS
