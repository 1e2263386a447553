"""What otapack shows about a package: --info (text or JSON) and --out-layout lines."""

import os

from .package import PackageReader, read_all
from .sources import FileSource


def describe(path):
    """Everything --info shows about a package, as plain data (JSON-ready)."""
    with FileSource(path) as source, source.stream() as stream:
        compressed = source.gz
        reader = PackageReader(stream, os.path.basename(path), strict=False)
        records = read_all(reader)
    h = reader.header
    return {
        "package": path,
        "compressed": compressed,
        "generation": h.generation,
        "header_checksum": "ok",
        "record_count": h.record_count,
        "total_data": h.total_data,
        "tool_id": h.tool_id,
        "scripts": {"begin": h.begin_len, "end": h.end_len},
        "records": [
            {
                "index": r.index,
                "op": r.op_name,
                "op_code": r.legacy_op if r.legacy_op is not None else r.op,
                "targets": r.targets,
                "masks": [m for _, m in r.target_masks()] if r.masks else None,
                "src_name": r.src_name,
                "label": r.label,
                "data_len": r.data_len,
                "dst_size": r.dst_size,
                "mode": "%o" % r.mode,
                "checksum": r.checksum_text(),
                "verdict": "ok" if r.ok else "BAD",
            }
            for r in records
        ],
    }


def layout_lines(records):
    """--out-layout: one line per target, ``index,src_name,target,0x<mask>``; as the vendor's,
    only the targets with a mask (the first 16)."""
    lines = []
    for rec in records:
        name = rec.src_name or os.path.basename(rec.targets[0])
        for target, mask in rec.target_masks():
            if mask is None:
                continue
            lines.append("%d,%s,%s,0x%x" % (rec.index, name, target, mask))
    return lines
