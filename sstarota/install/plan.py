"""What the verify pass learns (the target checks both passes share are targets.py's).

The plan holds totals, not records: the digests that tie later passes to this one (32
bytes per verify block of package, blocks.BLOCK), the work ahead for progress, the manifest's delta entries and,
for delta records only, their targets (their sources are hashed once the manifest has been
read). Memory does not grow with the number of records beyond 4 bytes each (the
fingerprints that name the first record a manifest disagrees with).
"""

from __future__ import annotations

import array
import hashlib

from ..manifest import Manifest
from ..recordclass import TYPE_CHECKING, dataclass, field
from ..text import shown
from .targets import Named

if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

#: a target's verdict in the verify pass (deltas.py settles them; --dry-run shows them)
IN_PLACE, FROM_STASH, APPLY = "in place", "from the stash", "apply"


@dataclass
class Plan:
    """What pass 1 established; later passes read the package through its digests."""

    name: str
    generation: str = ""
    records: int = 0
    package_bytes: int = 0
    begin_len: int = 0
    end_len: int = 0
    digests: List[bytes] = field(default_factory=list)
    units: int = 0  # apply-pass work, for progress
    script_records: int = 0
    manifest_index: Optional[int] = None
    problem: Optional[Exception] = None  # the first target problem, raised once integrity is checked
    stream_size: int = 0
    manifest: Optional[Manifest] = None  # once checked
    # (index, the record's Named, [(target, selected)], write units, the patch's sha256 hex)
    deltas: List[Tuple[int, "Named", List[Tuple[str, bool]], int, str]] = field(default_factory=list)
    # the record hashes a manifest is compared with: a running chain and 4-byte fingerprints
    chain: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    fingerprints: array.array = field(default_factory=lambda: array.array("I"))

    # what is in place already (inplace.py, deltas.py): per record 0 write, 1 every selected
    # target in place, 2 some (their names in partial); deltas finished from a stash
    status: bytearray = field(default_factory=bytearray)
    partial: Dict[int, set] = field(default_factory=dict)
    stashes: Dict[Tuple[int, str], str] = field(default_factory=dict)
    # deltas without a manifest to patch: (patch hex, old length, old sha256 hex) for the ledger
    sources: Dict[Tuple[int, str], Tuple[str, int, str]] = field(default_factory=dict)
    package_id: str = ""  # the journal's name for the package: from ident, the root and --all-targets
    # SHA-256 over the header, the scripts' digests, each record's header digest and data digest
    # (the record hashes every pass takes anyway) and the stream's length: names the package
    ident: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    in_place_records: int = 0  # apply pass: records skipped as in place, records written
    applied: int = 0
    device_records: int = 0  # records with a partition or volume target (state.py: "writing")
    selected_records: int = 0  # records with a target to write, and those of them not in place
    by_mark: Dict[str, List[int]] = field(default_factory=dict)  # target -> deltas in place by the journal only
    recheck: set = field(default_factory=set)  # of those, the ones whose target this run wrote before them
    to_write: int = 0
    data_digests: bytearray = field(default_factory=bytearray)  # 8 bytes of each record's data SHA-256
    # room the apply pass needs, per record that spools: (index, bytes under -t, bytes in the state directory)
    room: List[Tuple[int, int, int]] = field(default_factory=list)

    def settle(self, index, in_place, selected, digest=bytes(8)):
        """A record's verdict from the verify pass: the names of its selected targets in place."""
        while len(self.status) <= index:
            self.status.append(0)
        if len(self.data_digests) < 8 * index:
            self.data_digests.extend(bytes(8 * index - len(self.data_digests)))
        self.data_digests[8 * index:8 * index + 8] = digest
        self.selected_records += bool(selected)
        self.to_write += len(in_place) < len(selected)
        if in_place and len(in_place) == len(selected):
            self.status[index] = 1
        elif in_place:
            self.status[index] = 2
            self.partial[index] = set(in_place)

    def mark(self, index, name, verdict, stash=None):
        """A delta target's verdict (deltas.py)."""
        if verdict == FROM_STASH:
            self.stashes[(index, name)] = stash
        elif verdict == APPLY:
            if stash is not None:
                self.sources[(index, name)] = stash
        elif verdict == IN_PLACE:
            if stash is not None:  # in place by the journal's mark only: an earlier write to it undoes that
                self.by_mark.setdefault(name, []).append(index)
            while len(self.status) <= index:
                self.status.append(0)
            if self.status[index] == 0:
                self.status[index] = 2
            self.partial.setdefault(index, set()).add(name)

    def patch_of(self, index):
        """The SHA-256 (hex) of a delta record's patch."""
        for entry in self.deltas:
            if entry[0] == index:
                return entry[4]
        return None

    def wrote(self, index, name):
        """Record index wrote name: a later delta in place by the journal's mark only is not any more."""
        for later in self.by_mark.get(name, ()):
            if later > index:
                self.recheck.add(later)

    def digest(self, index):
        return bytes(self.data_digests[8 * index:8 * index + 8])

    def unsettle(self, index):
        if index < len(self.status):
            self.to_write += self.status[index] == 1
            self.status[index] = 0
        self.partial.pop(index, None)

    def needs_journal(self):
        return bool(self.deltas) or self.device_records > 0

    def in_place(self, index, name):
        if index >= len(self.status) or not self.status[index]:
            return False
        return self.status[index] == 1 or name in self.partial.get(index, ())

    def add_record_hashes(self, header_sha, data_sha):
        pair = header_sha + data_sha
        self.chain.update(pair)
        self.fingerprints.append(int.from_bytes(hashlib.sha256(pair).digest()[:4], "little"))

    def headline(self):
        return ("package %s: %s, %d record(s), %d bytes; begin script %d bytes, end script %d bytes"
                % (shown(self.name), self.generation, self.records, self.package_bytes, self.begin_len,
                   self.end_len))


def plan_line(rec, of, name, path, selected, state=""):
    where = "" if path is None or path == name else " -> %s" % shown(path)
    skip = "" if selected else " (mask 0: skipped)"
    if selected and state:
        skip = " (%s)" % state
    return "  %d/%d %-11s %s%s, %d bytes%s" % (rec.index + 1, of, rec.op_name, shown(name), where, rec.data_len,
                                              skip)
