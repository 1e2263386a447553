"""Expected package bytes, packed here from the layouts in docs/FORMAT.md with struct
(independently of sstarota's schema and packer)."""

import hashlib
import struct

TOOL_ID = b"vendor-bytes-test"


def bytesum(data):
    return sum(data) & 0xFFFFFFFF


def rec04(dst, data=b"", dst_size=0, mode=0, op=0):
    """A 0.4 record: u64 data_len, char dst[256], u64 dst_size, u32 mode, u32 data_sum, u32 op, 4 zero bytes."""
    head = struct.pack("<Q256sQIII4x", len(data), dst.encode(), dst_size, mode, bytesum(data), op)
    assert len(head) == 288
    return head + data, len(data)


def pkg04(records, begin=b"", end=b""):
    """A 0.4 package: the 32-byte header (its sum covers bytes 4..31 and the scripts), scripts, records."""
    total = sum(n for _, n in records)
    rest = struct.pack("<IIIQII", 0, 4, len(records), total, len(begin), len(end))
    return struct.pack("<I", bytesum(rest + begin + end)) + rest + begin + end + b"".join(r for r, _ in records)


def rec16(dst, data=b"", src=b"", label=b"", dst_size=0, mode=0, masks=(), op=0):
    """A 1.6 record: MD5 of bytes 16..1639 and the data, then u64 data_len, src_name[512],
    dst[512], label[512], u64 dst_size, u32 mode, s32 mask[16] (unused 1), u32 op."""
    if isinstance(dst, str):
        dst = dst.encode()
    if isinstance(src, str):
        src = src.encode()
    masks = list(masks) + [1] * (16 - len(masks))
    body = struct.pack("<Q512s512s512sQI16iI", len(data), src, dst, label, dst_size, mode, *masks, op)
    assert len(body) == 1624
    return hashlib.md5(body + data).digest() + body + data, len(data)


def pkg16(records, begin=b"", end=b"", tool_id=TOOL_ID):
    """A 1.6 package: the 128-byte header (MD5 of bytes 16..127; MD5 of the scripts), scripts, records."""
    total = sum(n for _, n in records)
    rest = hashlib.md5(begin + end).digest() + struct.pack(
        "<IIIIQII64s", 1, 6, len(records), 0, total, len(begin), len(end), tool_id)
    assert len(rest) == 112
    return hashlib.md5(rest).digest() + rest + begin + end + b"".join(r for r, _ in records)
