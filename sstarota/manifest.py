"""The sstarota manifest (version 2): a hash of every byte of the package, and the place
a signature, the compatible boards and the version travel.

It is the package's last record: a script record whose data is only shell comments, so
the vendor's otaunpack pipes it into sh and nothing happens, while sstarota's otaunpack
reads it. Text, one entry a line, in this order (docs/FORMAT.md has the coverage table):

    # sstarota-manifest 2
    # a no-op for sh: ...                (the fixed COMMENT line)
    # package <sha256 of the header (manifest-dependent fields zeroed) and both scripts>
    # compatible <board> [<board> ...]   (optional)
    # version <version>                  (optional)
    # record <index> <sha256 of the record header> <sha256 of the record data>
    # diff <index> old <length> <sha256> new <length> <sha256>
    # end
    # signature <ed25519|p256> <key id> <signature, hex>   (optional: the one uncovered line)

The manifest record's own header is fixed (op 6, target and source name NAME, mode
0100644, dst_size = data length, 1.6 masks all 1): only its data length and checksum vary,
and both follow from the data. The signature signs SIGNED_PREFIX + sha256 of every byte
of the data up to and including the `# end` line.

Version 1 manifests (sstarota before signatures) are refused: they left the scripts and
their own header uncovered.
"""

from __future__ import annotations

import hashlib
import re

from . import schema
from .errors import PackageError
from .recordclass import TYPE_CHECKING, dataclass, field

if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

NAME = "sstarota-manifest.sh"
MAGIC = b"# sstarota-manifest "
VERSION = 2
COMMENT = "# a no-op for sh: sstarota's otaunpack reads it (hashes of every byte, signature)"
MODE = 0o100644
SIGNED_PREFIX = b"sstarota-manifest-2\n"

_LONGEST_LINE = 512
#: the largest manifest: fixed lines plus a record and a diff line for each of the
#: MAX_RECORDS records; the packer never writes more, the reader refuses more
MAX_SIZE = 4096 + schema.MAX_RECORDS * 340

_HEX = r"([0-9a-f]{64})"
_NUM = r"(0|[1-9][0-9]{0,19})"
#: the line patterns (compiled by re on first use: an install without a manifest never does)
_LINES = {
    "package": r"^# package %s$" % _HEX,
    "compatible": r"^# compatible ([A-Za-z0-9._+-]{1,64}(?: [A-Za-z0-9._+-]{1,64}){0,15})$",
    "version": r"^# version ([A-Za-z0-9._+~-]{1,64})$",
    "record": r"^# record %s %s %s$" % (_NUM, _HEX, _HEX),
    "diff": r"^# diff %s old %s %s new %s %s$" % (_NUM, _NUM, _HEX, _NUM, _HEX),
    "end": r"^# end$",
    "signature": r"^# signature (ed25519|p256) ([0-9a-f]{16}) ([0-9a-f]{128})$",
}
#: which line may follow which
_NEXT = {"comment": ("package",), "package": ("compatible", "version", "record", "diff", "end"),
         "compatible": ("version", "record", "diff", "end"), "version": ("record", "diff", "end"),
         "record": ("record", "diff", "end"), "diff": ("diff", "end"), "end": ("signature",), "signature": ()}


@dataclass
class DeltaInfo:
    old_len: int
    old_sha256: str
    new_len: int
    new_sha256: str


@dataclass
class Signature:
    alg: str
    key_id: str
    sig: bytes


@dataclass
class Manifest:
    package: str = "0" * 64
    records: List[Tuple[str, str]] = field(default_factory=list)  # (header sha256, data sha256)
    diffs: Dict[int, DeltaInfo] = field(default_factory=dict)
    compatible: Tuple[str, ...] = ()
    version: Optional[str] = None
    signature: Optional[Signature] = None
    body_sha256: bytes = b""  # set by the parser

    def body(self):
        lines = ["# sstarota-manifest %d" % VERSION, COMMENT, "# package %s" % self.package]
        if self.compatible:
            lines.append("# compatible %s" % " ".join(self.compatible))
        if self.version is not None:
            lines.append("# version %s" % self.version)
        for i, (h, d) in enumerate(self.records):
            lines.append("# record %d %s %s" % (i, h, d))
        for i in sorted(self.diffs):
            x = self.diffs[i]
            lines.append("# diff %d old %d %s new %d %s" % (i, x.old_len, x.old_sha256, x.new_len, x.new_sha256))
        lines.append("# end")
        text = ("\n".join(lines) + "\n").encode()
        check_fields(self.compatible, self.version, text)
        return text

    def to_bytes(self, signature=None):
        """The record data; signature: a Signature, or None (unsigned)."""
        sig = signature or self.signature
        tail = b"" if sig is None else signature_line(sig)
        data = self.body() + tail
        if len(data) > MAX_SIZE:
            raise PackageError("the manifest would be %d bytes, more than the %d otaunpack reads" % (len(data), MAX_SIZE))
        return data


def signature_line(sig):
    return ("# signature %s %s %s\n" % (sig.alg, sig.key_id, sig.sig.hex())).encode()


def check_fields(compatible, version, text=None):
    """Reject board names and versions the manifest cannot carry."""
    if compatible and not re.match(_LINES["compatible"], "# compatible " + " ".join(compatible)):
        raise PackageError("compatible %r: up to 16 names of letters, digits and ._+-" % " ".join(compatible))
    if version is not None and not re.match(_LINES["version"], "# version %s" % version):
        raise PackageError("version %r: 1 to 64 letters, digits and ._+~-" % version)


def signed_message(body_sha256):
    """What a signature signs: a domain prefix and the SHA-256 of the manifest's body."""
    return SIGNED_PREFIX + body_sha256


# ---------------------------------------------------------------------------- what it covers


def header_digest(gen, raw_header, begin, end):
    """SHA-256 of the package header with the fields that depend on the manifest record
    (checksum, record count, data total) zeroed, then both scripts."""
    raw = bytearray(raw_header)
    for name in (gen.header.fields[0][0], "record_count", "total_data"):
        at, size = gen.header.offset(name), gen.header.field_size(name)
        raw[at:at + size] = bytes(size)
    h = hashlib.sha256(bytes(raw))
    h.update(begin)
    h.update(end)
    return h.hexdigest()


def record_header(gen, data_len, digest):
    """The manifest record's header, the only one allowed: fixed but for its length and checksum."""
    fields = dict(data_len=data_len, dst=NAME, dst_size=data_len, mode=MODE, op=schema.OP_SCRIPT)
    return schema.build(gen.record, gen.record_fields(fields, digest, src_name=NAME), "the manifest record")


def looks_like(rec, head=b""):
    """A record the reader must treat as a manifest (and reject if it is not a good one)."""
    return rec.dst == NAME or getattr(rec, "src_name", "") == NAME or head.startswith(MAGIC)


def check_record_header(gen, rec):
    """PackageError unless rec's header is exactly the manifest record's."""
    if rec.data_len > MAX_SIZE:
        raise PackageError("record %d: a manifest of %d bytes, more than the %d otaunpack reads; rejected"
                           % (rec.index + 1, rec.data_len, MAX_SIZE))
    if rec.raw_header != record_header(gen, rec.data_len, rec.checksum):
        raise PackageError("record %d looks like the sstarota manifest but its header is not the manifest's "
                           "(op 6, target %s, mode 0100644); rejected" % (rec.index + 1, NAME))


# ---------------------------------------------------------------------------- reading


class Parser:
    """Reads a manifest as it streams in (memory flat in its length): strict line grammar
    and order; record and diff lines go to the callbacks as they are read."""

    def __init__(self, on_record: Callable[[int, str, str], None], on_diff: Callable[[int, DeltaInfo], None]):
        self.on_record, self.on_diff = on_record, on_diff
        self.m = Manifest()  # its records are not kept (left empty): on_record sees them, self.count counts them
        self.count = 0
        self.diffs = 0
        self.last_diff = -1
        self.state = "start"
        self.pending = b""
        self.body = hashlib.sha256()
        self.size = 0

    def feed(self, piece):
        self.size += len(piece)
        if self.size > MAX_SIZE:
            raise PackageError("the manifest is larger than the %d bytes otaunpack reads" % MAX_SIZE)
        data = self.pending + bytes(piece)
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            self._line(data[start:nl])
            start = nl + 1
        self.pending = data[start:]
        if len(self.pending) > _LONGEST_LINE:
            raise PackageError("the manifest has a line longer than %d bytes" % _LONGEST_LINE)

    def close(self):
        if self.pending or self.state not in ("end", "signature"):
            raise PackageError("the manifest is truncated (no '# end' line)")
        self.m.body_sha256 = self.body.digest()
        return self.m

    def _line(self, raw):
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise PackageError("the manifest is not ASCII text") from None
        if self.state == "start":
            if not raw.startswith(MAGIC):
                raise PackageError("the manifest record does not start with %r" % MAGIC.decode())
            version = line[len(MAGIC):]
            if version != str(VERSION):
                raise PackageError("manifest version %s is not supported (this otaunpack reads version %d; "
                                   "re-create the package with this otapack)" % (version[:20], VERSION))
            self.state = "magic"
        elif self.state == "magic":
            if line != COMMENT:
                raise PackageError("the manifest's second line is not its fixed comment")
            self.state = "comment"
        else:
            self._entry(line)
        if self.state != "signature":
            self.body.update(raw + b"\n")

    def _entry(self, line):
        for kind in _NEXT[self.state]:
            match = re.match(_LINES[kind], line)
            if match:
                break
        else:
            raise PackageError("the manifest has an unexpected line after its %s line: %r" % (self.state, line[:60]))
        self.state = kind
        g = match.groups()
        if kind == "package":
            self.m.package = g[0]
        elif kind == "compatible":
            self.m.compatible = tuple(g[0].split(" "))
        elif kind == "version":
            self.m.version = g[0]
        elif kind == "record":
            if int(g[0]) != self.count:
                raise PackageError("manifest record entries out of order at %r" % line[:40])
            self.on_record(self.count, g[1], g[2])
            self.count += 1
        elif kind == "diff":
            self._diff(g)
        elif kind == "signature":
            self.m.signature = Signature(g[0], g[1], bytes.fromhex(g[2]))

    def _diff(self, g):
        index = int(g[0])
        if index >= self.count or (self.diffs and index <= self.last_diff):
            raise PackageError("manifest diff entry for record %d out of order or out of range" % index)
        self.diffs += 1
        self.last_diff = index
        self.on_diff(index, DeltaInfo(int(g[1]), g[2], int(g[3]), g[4]))


def parse(data):
    """A whole Manifest (records and diffs kept) from its bytes: the packer's and --info's reader."""
    records: List[Tuple[str, str]] = []
    diffs: Dict[int, DeltaInfo] = {}
    p = Parser(lambda i, h, d: records.append((h, d)), diffs.__setitem__)
    p.feed(data)
    m = p.close()
    m.records, m.diffs = records, diffs
    return m
