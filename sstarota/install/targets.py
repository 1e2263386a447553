"""The target checks both passes share: where a record's target is (confined under the root),
whether its kind suits the record (a file, a device node the writers handle, a staged image
under --root), whether the data fits it, and what a delta's patch says its result will be."""

from __future__ import annotations

import os
import stat

from .. import delta, flash, schema
from ..confine import Located, TargetProblem, fd_path
from ..errors import PackageError
from ..paths import check_target
from ..recordclass import TYPE_CHECKING, dataclass
from ..text import shown
from ..writers import for_op

if TYPE_CHECKING:
    from typing import Optional

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
