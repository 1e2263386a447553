"""What the verify pass decides about trust: the manifest against every byte read, then
the board's policy (signature, compatible boards, version), before any script runs.

The manifest is parsed as it streams in (manifest.Parser): its record lines are compared
with the fingerprints pass 1 kept (4 bytes a record) and a running chain, so memory stays
flat in the record count. The policy (policy.py) is applied to what the manifest says.
"""

import hashlib

from .. import manifest
from ..errors import PackageError


class ManifestCheck:
    """Feeds the last record's data to a manifest parser and checks it against the plan."""

    def __init__(self, plan, gen, rec):
        manifest.check_record_header(gen, rec)
        self.plan = plan
        self.chain = hashlib.sha256()
        self.deltas = {entry[0] for entry in plan.deltas}
        self.diffs = {}
        self.parser = manifest.Parser(self._record, self._diff)

    def feed(self, piece):
        self.parser.feed(piece)

    def _record(self, i, header_sha, data_sha):
        fingerprints = self.plan.fingerprints
        if i >= len(fingerprints):
            raise PackageError("the manifest lists more records than the %d the package has before it"
                               % len(fingerprints))
        pair = bytes.fromhex(header_sha) + bytes.fromhex(data_sha)
        self.chain.update(pair)
        if int.from_bytes(hashlib.sha256(pair).digest()[:4], "little") != fingerprints[i]:
            raise PackageError("record %d: its header or data does not match the manifest" % (i + 1))

    def _diff(self, index, info):
        if index not in self.deltas:
            raise PackageError("the manifest has delta data for record %d, which is not a delta" % index)
        self.diffs[index] = info

    def finish(self, reader):
        """The whole manifest, checked against the header, the scripts and every record."""
        m = self.parser.close()
        plan = self.plan
        if self.parser.count != len(plan.fingerprints):
            raise PackageError("the manifest lists %d records, the package has %d before it"
                               % (self.parser.count, len(plan.fingerprints)))
        if self.chain.digest() != plan.chain.digest():
            raise PackageError("the records do not match the manifest")
        h = reader.header
        if manifest.header_digest(h.format, h.raw, reader.begin_script, reader.end_script) != m.package:
            raise PackageError("the package header or its begin/end scripts do not match the manifest")
        m.diffs = self.diffs
        return m
