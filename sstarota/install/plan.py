"""What the verify pass learns, and the target checks both passes share.

The plan holds totals, not records: the digests that tie later passes to this one (32
bytes per verify block of package, blocks.BLOCK), the work ahead for progress, the manifest's delta entries and,
for delta records only, their targets (their sources are hashed once the manifest has been
read). Memory does not grow with the number of records beyond 4 bytes each (the
fingerprints that name the first record a manifest disagrees with).
"""

import array
import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .. import delta, flash, schema
from ..confine import Located, TargetProblem, fd_path
from ..errors import PackageError
from ..manifest import Manifest
from ..paths import check_target
from ..text import shown
from ..writers import for_op

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFBLK: "a block device node", stat.S_IFCHR: "a character device node"}


@dataclass
class Dest:
    """One target of a record on this host, checked for its kind."""

    name: str  # as the package names it
    path: Optional[str]  # on this host: for messages, flash look-ups and opening device nodes
    loc: Optional[Located] = None  # the directory and name (files)
    kind: str = "none"  # "file", "absent", "device", "none" (script records)

    @property
    def partition(self):
        """A raw partition: a device node, or (staging under --root) a file named under /dev/."""
        return self.kind == "device" or _under_dev(self.name)

    def open_device(self, flags):
        """The device node, opened in the directory the target walk reached (its name is not
        resolved again: a symlink swapped in since cannot redirect the write)."""
        assert self.loc is not None  # a device target is always located
        return self.loc.open(flags)

    def close(self):
        if self.loc is not None:
            self.loc.close()
            self.loc = None


def _under_dev(name):
    """Is the target under /dev (a run of '/' counting as one, as the kernel reads it)?"""
    comps = [c for c in name.split("/") if c]
    return name.startswith("/") and len(comps) > 1 and comps[0] == "dev"


def _kind_name(st):
    return _KINDS.get(stat.S_IFMT(st.st_mode), "of an unsupported kind")


def open_dest(ctx, rec, name, create=False):
    """The target checked for what the record's writer can write: regular files for file
    records, device nodes (on a board, or under --root with --allow-devices) or staged images
    for partition records. create: make missing directories (the apply pass only)."""
    writer = for_op(rec.op)
    root = ctx.fsroot
    what = "record %d (%s %s)" % (rec.index + 1, rec.op_name, shown(name))
    try:
        check_target(name)
    except PackageError as exc:
        raise PackageError("record %d: %s" % (rec.index + 1, exc)) from None
    follow = writer.devices
    makes_dirs = writer.makes_dirs(root.confined or not _under_dev(name))
    loc = root.locate(name, create=create and makes_dirs, follow_final=follow, missing_ok=True)
    if loc is None:
        st = None
    else:
        try:
            st = loc.lstat()
        except OSError:
            loc.close()
            raise
    try:
        return _checked(ctx, rec, writer, name, what, loc, st)
    except BaseException:
        if loc is not None:
            loc.close()
        raise


def _checked(ctx, rec, writer, name, what, loc, st):
    path = loc.path if loc is not None else ctx.fsroot.resolve_path(name)
    board_dev = writer.devices and not ctx.fsroot.confined and _under_dev(name)
    if st is None:
        if writer.delta:
            raise TargetProblem("%s: the file to patch, %s, does not exist" % (what, shown(name)))
        if board_dev:
            raise TargetProblem("%s: target %s does not exist on this board" % (what, shown(name)))
        return Dest(name, path, loc, "absent")
    if board_dev and stat.S_IFMT(st.st_mode) not in (stat.S_IFBLK, stat.S_IFCHR):
        raise TargetProblem("%s: %s is %s, not a device node; refused (on a board /dev holds devices)"
                            % (what, shown(name), "a regular file" if stat.S_ISREG(st.st_mode) else _kind_name(st)))
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFREG or (fmt == stat.S_IFLNK and not writer.devices):
        if fmt == stat.S_IFLNK:  # replaced (or deleted) itself; where it points must stay inside
            inner = ctx.fsroot.locate(name, follow_final=True, missing_ok=True)
            if inner is not None:
                inner.close()
        return Dest(name, path, loc, "file")
    if fmt in (stat.S_IFBLK, stat.S_IFCHR) and writer.devices:
        if ctx.fsroot.confined and not ctx.allow_devices:
            raise TargetProblem("%s: %s is a device node inside the root %s; refused (a staging root holds image "
                                "files; give --allow-devices to write device nodes)"
                                % (what, shown(name), ctx.fsroot.given))
        try:
            fd = loc.open(os.O_RDONLY | os.O_NONBLOCK)  # ENXIO and the like: found now, not mid-write
        except OSError as exc:
            raise TargetProblem("%s: cannot open %s: %s" % (what, shown(name), exc.strerror)) from None
        try:  # the writers open the node again in the same directory (a UBI update needs the only fd)
            supported = writer.device_supported(st, fd_path(fd))
        finally:
            os.close(fd)
        if not supported:
            raise TargetProblem("%s: %s is %s that is not %s; refused" % (what, shown(name), _kind_name(st),
                                                                        writer.device_kind))
        return Dest(name, path, loc, "device")
    raise TargetProblem("%s: %s is %s; a %s record cannot write it" % (what, shown(name), _kind_name(st),
                                                                      rec.op_name))


def check_capacity(rec, dest, need, what_bytes="the image"):
    """Reject (in the verify pass) data larger than its device target."""
    if dest.kind != "device":
        return
    fd = dest.open_device(os.O_RDONLY | os.O_NONBLOCK)
    try:
        capacity = flash.device_capacity(fd_path(fd))
        index = flash.mtd_index_of(fd_path(fd))
    finally:
        os.close(fd)
    if capacity is not None and need > capacity:
        note = ""
        if index is not None:
            note = ", mtd%d less %d bad blocks" % (index, flash.mtd_info(index).bad_blocks)
        raise PackageError("record %d: %s is %d bytes, larger than %s can hold (%d bytes%s)"
                           % (rec.index + 1, what_bytes, need, shown(dest.name), capacity, note))


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


def patch_new_size(rec, head):
    """The result size a delta record's patch header declares."""
    if rec.data_len < delta.HEADER:
        raise PackageError("record %d: file-diff data is %d bytes, too short for a BSDIFF40 patch"
                           % (rec.index + 1, rec.data_len))
    try:
        return delta.patch_new_size(head)
    except PackageError as exc:
        raise PackageError("record %d (file-diff %s): %s" % (rec.index + 1, shown(rec.dst), exc)) from None


class Named:
    """The fields of a record that target checks name in their messages."""

    def __init__(self, index, op, dst):
        self.index = index
        self.op = op
        self.dst = dst
        self.op_name = schema.OP_NAMES[op]
