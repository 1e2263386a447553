"""Packages byte by byte, from the layouts in docs/FORMAT.md with struct (independently of
sstarota's schema and packer): what a test compares our packer's output with, or feeds the
installer where otapack would not make the shape (hostile names, 100,000 records)."""

import hashlib
import struct

TOOL_ID = b"vendor-bytes-test"
OP_BLOCK, OP_UBI, OP_UPDATE, OP_ADD, OP_DELETE, OP_DIFF, OP_SCRIPT = range(7)


def byte_sum(data):
    return sum(data) & 0xFFFFFFFF


def _name(s):
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s


def rec04(dst, op, data=b"", mode=0, dst_size=0):
    """A 0.4 record: u64 data_len, char dst[256], u64 dst_size, u32 mode, u32 data_sum, u32 op,
    4 zero bytes; then the data."""
    head = struct.pack("<Q256sQIII4x", len(data), _name(dst), dst_size, mode, byte_sum(data), op)
    assert len(head) == 288
    return head + data


def pkg04(records, begin=b"", end=b"", count=None):
    """A 0.4 package: the 32-byte header (its sum covers bytes 4..31 and the scripts), scripts,
    records (from rec04); count, if given, is the header's record count whatever the records."""
    total = sum(struct.unpack_from("<Q", r)[0] for r in records)
    n = len(records) if count is None else count
    rest = struct.pack("<IIIQII", 0, 4, n, total, len(begin), len(end))
    return struct.pack("<I", byte_sum(rest + begin + end)) + rest + begin + end + b"".join(records)


def rec16(dst, op, data=b"", src=b"", label=b"", dst_size=0, mode=0, masks=()):
    """A 1.6 record: MD5 of bytes 16..1639 and the data, then u64 data_len, src_name[512],
    dst[512], label[512], u64 dst_size, u32 mode, s32 mask[16] (unused 1), u32 op; the data."""
    masks = list(masks) + [1] * (16 - len(masks))
    body = struct.pack("<Q512s512s512sQI16iI", len(data), _name(src), _name(dst), _name(label), dst_size, mode,
                       *masks, op)
    assert len(body) == 1624
    return hashlib.md5(body + data).digest() + body + data


def pkg16(records, begin=b"", end=b"", tool_id=TOOL_ID):
    """A 1.6 package: the 128-byte header (MD5 of bytes 16..127; MD5 of the scripts), scripts,
    records (from rec16)."""
    total = sum(struct.unpack_from("<Q", r, 16)[0] for r in records)
    rest = hashlib.md5(begin + end).digest() + struct.pack(
        "<IIIIQII64s", 1, 6, len(records), 0, total, len(begin), len(end), tool_id)
    assert len(rest) == 112
    return hashlib.md5(rest).digest() + rest + begin + end + b"".join(records)

#: a begin script that leaves MARKER in the root: a test sees whether the installer ran it
MARKER = "begin-ran"
BEGIN = ('touch "$OTA_ROOT/%s"\n' % MARKER).encode()
