"""Round trips for every struct of the schema, and the byte-sum's exactness."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sstarota import checksum, defaults, package, schema

u32 = st.integers(0, schema.U32_MAX)
u64 = st.integers(0, schema.U64_MAX)
s32 = st.integers(-(1 << 31), (1 << 31) - 1)


def text(max_bytes):
    return st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=max_bytes)


def roundtrip(struct_, obj):
    """parse(build(obj)) == obj, build(parse(b)) == b, len == sizeof."""
    raw = struct_.build(obj)
    assert len(raw) == struct_.sizeof()
    parsed = struct_.parse(raw)
    for key, value in obj.items():
        got = parsed[key]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            got = [{k: g[k] for k in v} for g, v in zip(got, value)]
        assert got == value, key
    assert struct_.build(parsed) == raw


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
    import pytest
    from construct import ConstructError

    raw = bytearray(schema.Record04.build(dict(data_len=0, dst="/a", dst_size=0, mode=0, data_sum=0, op=0,
                                               pad=bytes(4))))
    raw[8 + 10] = 1  # a byte after the NUL of dst
    with pytest.raises(ConstructError):
        schema.Record04.parse(bytes(raw))
    with pytest.raises(ConstructError):
        schema.Record04.build(dict(data_len=0, dst="x" * 256, dst_size=0, mode=0, data_sum=0, op=0, pad=bytes(4)))


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
