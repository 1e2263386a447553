"""The sstarota manifest: SHA-256s of every record, and the source/result of every delta.

It travels as the package's last record: a script record whose data is only shell
comments, so the vendor's otaunpack pipes it into sh and nothing happens, while
sstarota's otaunpack reads it. Opt-in (`otapack -c ... --manifest`); every later `-a`
replaces it with an updated one, so it stays last. Text, one entry a line:

    # sstarota-manifest 1
    # record <index> <sha256 of the record header> <sha256 of the record data>
    # diff <index> old <length> <sha256> new <length> <sha256>
    # end

It makes the 0.3/0.4 record headers tamper-evident (no vendor checksum covers them) and
lets the installer check, before writing anything, that every delta will be applied to
the content it was made from.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .errors import PackageError
from .schema import OP_SCRIPT

NAME = "sstarota-manifest.sh"
MAGIC = b"# sstarota-manifest "
VERSION = 1
#: the largest manifest a reader accepts (about 10,000 records)
MAX_SIZE = 2 << 20

_RECORD = re.compile(r"^# record (\d+) ([0-9a-f]{64}) ([0-9a-f]{64})$")
_DIFF = re.compile(r"^# diff (\d+) old (\d+) ([0-9a-f]{64}) new (\d+) ([0-9a-f]{64})$")


@dataclass
class DeltaInfo:
    old_len: int
    old_sha256: str
    new_len: int
    new_sha256: str


@dataclass
class Manifest:
    records: List[Tuple[str, str]] = field(default_factory=list)  # (header sha256, data sha256)
    diffs: Dict[int, DeltaInfo] = field(default_factory=dict)

    def to_bytes(self):
        lines = ["# sstarota-manifest %d" % VERSION,
                 "# a no-op for sh: record hashes and delta sources, read by sstarota's otaunpack"]
        for i, (h, d) in enumerate(self.records):
            lines.append("# record %d %s %s" % (i, h, d))
        for i in sorted(self.diffs):
            x = self.diffs[i]
            lines.append("# diff %d old %d %s new %d %s" % (i, x.old_len, x.old_sha256, x.new_len, x.new_sha256))
        lines.append("# end")
        return ("\n".join(lines) + "\n").encode()


def is_manifest(rec):
    """Is this record (by its header) a manifest candidate?"""
    return rec.op == OP_SCRIPT and rec.dst == NAME and rec.data_len <= MAX_SIZE


def parse(data):
    """A Manifest from its bytes; PackageError when it is not one we can read."""
    if not data.startswith(MAGIC):
        raise PackageError("the manifest record does not start with %r" % MAGIC.decode())
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PackageError("the manifest is not ASCII text") from None
    lines = text.split("\n")
    if lines[-1] != "" or lines[-2] != "# end":
        raise PackageError("the manifest is truncated (no '# end' line)")
    version = lines[0][len(MAGIC):].strip()
    if version != str(VERSION):
        raise PackageError("manifest version %s is not supported (this otaunpack reads version %d)"
                           % (version, VERSION))
    m = Manifest()
    for line in lines[1:-2]:
        if not line.startswith("#"):
            raise PackageError("the manifest has a line that is not a shell comment: %r" % line[:60])
        r = _RECORD.match(line)
        if r:
            if int(r.group(1)) != len(m.records):
                raise PackageError("manifest record entries out of order at %r" % line[:40])
            m.records.append((r.group(2), r.group(3)))
            continue
        d = _DIFF.match(line)
        if d:
            m.diffs[int(d.group(1))] = DeltaInfo(int(d.group(2)), d.group(3), int(d.group(4)), d.group(5))
    return m
