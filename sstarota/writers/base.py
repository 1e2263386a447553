"""The writer interface, the registry, and the checks the writers share."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile

from ..confine import Root, StaleCleaner
from .. import flash
from ..errors import InstallError, PackageError
from ..fsutil import copy_stream, write_all
from ..recordclass import TYPE_CHECKING, dataclass, field
from ..state import StateDir

if TYPE_CHECKING:
    from typing import Callable, Dict, Optional, Protocol
    from ..confine import AtomicAt
    from ..progress import Progress
else:
    Protocol = object  # Output is an interface for the type checker; typing is not imported at run time

WRITERS: Dict[int, type] = {}


def register(*ops):
    def deco(cls):
        for op in ops:
            WRITERS[op] = cls
        return cls
    return deco


def for_op(op):
    """The writer class of a record kind (its op code, schema.OP_*)."""
    try:
        return WRITERS[op]
    except KeyError:
        raise PackageError("no writer for op code %d" % op) from None


def partition_node(st, path):
    """A device node the raw writers handle: a block device or an MTD character device."""
    return stat.S_ISBLK(st.st_mode) or flash.mtd_index_of(path) is not None


@dataclass
class Written:
    """What an install wrote, for its summary."""

    files: int = 0  # files replaced, created or deleted (staged images included)
    flash_blocks: int = 0  # MTD erase blocks erased and written
    volumes: int = 0  # UBI volumes updated
    device_bytes: int = 0  # bytes written to block devices (eMMC partitions)

    def summary(self):
        extra = ", %d byte(s) to block devices" % self.device_bytes if self.device_bytes else ""
        return "%d file(s), %d flash erase block(s), %d UBI volume(s)%s" % (self.files, self.flash_blocks,
                                                                           self.volumes, extra)


class Output(Protocol):
    """Where a writer's data goes: an AtomicAt (a file replaced on commit) or a DeviceFile."""

    def write(self, block: bytes) -> object: ...

    def commit(self) -> object: ...

    def abort(self) -> object: ...


@dataclass
class Context:
    """What writers may use: the root, the work directory, scripts, notes, progress."""

    root: Optional[str] = None
    tmpdir: str = field(default_factory=lambda: tempfile.gettempdir())  # tempfile: loaded when used
    run_scripts: bool = True
    note: Callable[[str], None] = lambda msg: None
    progress: Optional["Progress"] = None  # for writers whose work is not the data flow
    fsroot: Root = field(default_factory=Root)  # where targets are reached (the default: the board's /)
    allow_devices: bool = False  # under --root: device nodes inside the root may be written
    cleaner: StaleCleaner = field(default_factory=StaleCleaner)  # our temp files left by interrupted runs
    ignore_script_errors: bool = False  # as the vendor: a failing script is logged, and the update goes on
    script_failures: list = field(default_factory=list)  # (what, status) of scripts that failed and were let go
    written: Written = field(default_factory=Written)
    state: Optional[StateDir] = None  # the journal and stashes, or None
    touched: bool = False  # something ran or was written since the verify pass (install/inplace.py)

    def script_failed(self, what, status):
        """A script exited non-zero: an error, or (--ignore-script-errors) a note kept for the summary."""
        if not self.ignore_script_errors:
            raise InstallError("%s exited with status %d (give --ignore-script-errors to go on as the vendor's "
                               "otaunpack does)" % (what, status))
        self.script_failures.append((what, status))
        self.note("%s exited with status %d; going on (--ignore-script-errors)" % (what, status))

    def run_script(self, source, what, preamble=b""):
        """Pipe preamble and then a script (bytes or a file) into sh; return its exit status.

        A file is streamed, never read whole."""
        if not self.run_scripts:
            self.note("%s skipped (--no-scripts)" % what)
            return 0
        env = dict(os.environ)
        if self.root is not None:
            env["OTA_ROOT"] = os.path.realpath(self.root)
        stdout, stderr = (None if _open_for_output(fd) else subprocess.DEVNULL for fd in (1, 2))
        try:
            proc = subprocess.Popen(["sh"], stdin=subprocess.PIPE, cwd=self.root or "/", env=env, stdout=stdout,
                                    stderr=stderr)
        except OSError as exc:
            raise InstallError("cannot run sh for the %s: %s" % (what, exc.strerror)) from None
        assert proc.stdin is not None  # stdin=PIPE
        try:
            proc.stdin.write(preamble)
            if isinstance(source, (bytes, bytearray)):
                proc.stdin.write(source)
            else:
                copy_stream(source.read, proc.stdin.write, 1 << 16)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # sh finished before reading it all (exit in the script)
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        return proc.wait()


def _open_for_output(fd):
    """Whether our stdout/stderr still has a reader: a script writing into a pipe whose reader
    went away would die of SIGPIPE (and the end script would never see its status)."""
    import select

    try:
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        return not any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poll.poll(0))
    except (OSError, ValueError):
        return False


class Writer:
    """Base writer: override check/open/commit as needed. write/commit/abort go to self.out
    when open() sets one (an AtomicFile or a DeviceFile).

    The class attributes and class methods say what the record kind is, for the installer's
    checks (install/targets.py, install/inplace.py, install/pipeline.py): a new record kind sets
    them in its writer, and the installer does not change."""

    out: Optional[Output] = None
    targets = True  # False: what the record names is not a target (a script's name)
    devices = False  # writes device nodes (under /dev on a board) or, staging, their image files
    device_kind = "an MTD partition"  # what a device node it cannot write is not, for the refusal
    delta = False  # patches the target's current content: the target must exist (install/deltas.py)
    spools = False  # its data is spooled under the work directory (-t) before it is used

    @classmethod
    def makes_dirs(cls, image_file):
        """Whether the apply pass makes missing directories on the way to the target; image_file:
        the target is a file (not a board's device node)."""
        return False

    @classmethod
    def device_supported(cls, st, path):
        """Whether the device node (its lstat st, path naming it open) is one this kind writes."""
        return False

    @classmethod
    def pad(cls, rec):
        """Bytes of 0xFF the writer puts after the data."""
        return 0

    @classmethod
    def device_bytes(cls, rec, result_size):
        """(bytes, what they are) that a device target must hold, checked against its capacity in
        the verify pass, or None (no check). result_size: a delta's result, from its patch."""
        return None

    @classmethod
    def comparer(cls, rec, dest):
        """How the verify pass tells the record is in place at dest (writers/compare.py): a
        Compare fed the record's data, a Known verdict, or None (never in place: it runs again,
        or, a delta, is settled after the pass). May raise OSError (not in place)."""
        return None

    def __init__(self, ctx, rec, dest, expect=None):
        self.ctx = ctx
        self.rec = rec
        self.dest = dest  # install.targets.Dest: the target, checked and (devices) opened
        self.target = dest.name  # as the package names it
        self.path = dest.path  # on this host, for messages and flash look-ups
        self.expect = expect  # what the manifest says the result must be (deltas), or None

    @classmethod
    def check(cls, ctx, rec, target, path):
        """Pass-1 checks beyond the target's kind (no writes). Raise PackageError to reject."""

    def open(self):
        pass

    def write(self, block):
        if self.out is not None:
            self.out.write(block)

    def commit(self):
        if self.out is not None:
            self.out.commit()

    def abort(self):
        if self.out is not None:
            self.out.abort()


class DeviceFile:
    """A device node written in place from offset 0, fsynced on commit."""

    def __init__(self, fd, written=None):
        self.fd = fd
        self.written = written  # a Written whose device_bytes count what passes, or None

    def write(self, block):
        write_all(self.fd, block)
        if self.written is not None:
            self.written.device_bytes += len(block)

    def commit(self):
        os.fsync(self.fd)
        os.close(self.fd)

    def abort(self):
        os.close(self.fd)


def replaced_file(ctx, dest, mode) -> "AtomicAt":
    """A file target replaced atomically in the directory the target walk reached: mode 0
    keeps the existing mode (0644 for a new file), otherwise the permission bits of mode."""
    from ..confine import AtomicAt

    return AtomicAt(dest.loc, mode & 0o7777, cleaner=ctx.cleaner)
