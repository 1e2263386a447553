"""What otapack shows about a package: --info (text or JSON) and --out-layout lines."""

import os

import hashlib

from . import manifest
from .errors import OtaError
from .package import PackageReader
from .sources import FileSource


def _read(reader):
    """Every record, the (header, data) SHA-256s of each, and the last record's data when it
    looks like a manifest."""
    records, hashes, last = [], [], None
    for rec, chunks in reader.records():
        h = hashlib.sha256()
        named = reader.header.format is not None and manifest.looks_like(rec)
        keep = [] if named and rec.index == reader.header.record_count - 1 else None
        for piece in chunks:
            h.update(piece)
            if keep is not None:
                keep.append(bytes(piece))
        records.append(rec)
        hashes.append((hashlib.sha256(rec.raw_header).hexdigest(), h.hexdigest()))
        last = b"".join(keep) if keep is not None else None
    return records, hashes, last


#: the signature verdicts --info gives (JSON "signature", and the manifest's "verdict"): fixed words
SIGNATURE_VERDICTS = ("no-manifest", "unreadable", "mismatch", "unsigned", "unchecked", "unknown-key",
                      "bad-signature", "good")
_VERDICT_TEXT = {"unsigned": "unsigned", "unchecked": "signed by %s key %s, not checked (give --key)",
                 "unknown-key": "signed by %s key %s: unknown key",
                 "bad-signature": "signed by %s key %s: BAD signature",
                 "good": "signed by %s key %s: good signature"}


def manifest_verdict(reader, records, hashes, last, keys=None):
    """--info's manifest line: what it holds, whether it matches, who signed it and the verdict
    (a word of SIGNATURE_VERDICTS). keys: {key id: verifying key} to check the signature with."""
    if last is None:
        return None
    out = {"signed_by": None, "compatible": [], "version": None}
    try:
        m = manifest.parse(last)
        manifest.check_record_header(reader.header.format, records[-1])
        h = reader.header
        ok = (m.records == hashes[:-1]
              and manifest.header_digest(h.format, h.raw, reader.begin_script, reader.end_script) == m.package)
        out.update(compatible=list(m.compatible), version=m.version, matches=ok)
        sig = m.signature
        verdict, text = "unsigned", "unsigned"
        if sig is not None:
            out["signed_by"] = sig.key_id
            verdict = "unchecked"
            if keys:
                from . import signing

                vk = keys.get(sig.key_id)
                verdict = ("unknown-key" if vk is None else "good" if signing.verify(vk, sig, m.body_sha256)
                           else "bad-signature")
            text = _VERDICT_TEXT[verdict] % (sig.alg, sig.key_id)
        if not ok and verdict in ("good", "unchecked"):
            verdict = "mismatch"  # a signature over a manifest the package no longer matches vouches for nothing
        out["verdict"] = verdict
        text = "v%d, %s, %s" % (manifest.VERSION, "matches the package" if ok else "DOES NOT MATCH", text)
    except OtaError as exc:
        out.update(matches=False, verdict="unreadable")
        text = "UNREADABLE: %s" % exc
    if out["compatible"]:
        text += "; compatible %s" % " ".join(out["compatible"])
    if out["version"]:
        text += "; version %s" % out["version"]
    out["text"] = text
    return out


def describe(path, keys=()):
    """Everything --info shows about a package, as plain data (JSON-ready). keys: public key
    files to check the signature with (read first: an unreadable one is an error)."""
    loaded = None
    if keys:
        from . import signing

        loaded = signing.load_keys(keys)
    with FileSource(path) as source, source.stream() as stream:
        compressed = source.gz
        reader = PackageReader(stream, os.path.basename(path), strict=False)
        records, hashes, last = _read(reader)
    h = reader.header
    m = manifest_verdict(reader, records, hashes, last, loaded)
    return {
        "manifest": m,
        "signature": m["verdict"] if m else "no-manifest",
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
