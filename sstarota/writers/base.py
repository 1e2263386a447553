"""The writer interface, the registry, and the checks the writers share."""

import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from ..errors import InstallError, PackageError
from ..fsutil import AtomicFile, write_all

WRITERS: Dict[int, type] = {}


def register(*ops):
    def deco(cls):
        for op in ops:
            WRITERS[op] = cls
        return cls
    return deco


def writer_for(op):
    try:
        return WRITERS[op]
    except KeyError:
        raise PackageError("no writer for op code %d" % op) from None


@dataclass
class Context:
    """What writers may use: the root, the work directory, scripts, notes, progress."""

    root: Optional[str] = None
    tmpdir: str = field(default_factory=tempfile.gettempdir)
    run_scripts: bool = True
    note: Callable[[str], None] = lambda msg: None
    progress: Optional[object] = None  # progress.Progress, for writers whose work is not the data flow

    def run_script(self, data, what):
        """Pipe a script into sh; return its exit status."""
        if not self.run_scripts:
            self.note("%s skipped (--no-scripts)" % what)
            return 0
        env = dict(os.environ)
        if self.root is not None:
            env["OTA_ROOT"] = os.path.realpath(self.root)
        try:
            proc = subprocess.run(["sh"], input=data, cwd=self.root or "/", env=env)
        except OSError as exc:
            raise InstallError("cannot run sh for the %s: %s" % (what, exc.strerror)) from None
        return proc.returncode


class Writer:
    """Base writer: override check/open/commit as needed. write/commit/abort go to self.out
    when open() sets one (an AtomicFile or a DeviceFile)."""

    out = None

    def __init__(self, ctx, rec, target, path, expect=None):
        self.ctx = ctx
        self.rec = rec
        self.target = target  # as the package names it
        self.path = path  # on this host (under the root)
        self.expect = expect  # what the manifest says the result must be (deltas), or None

    @classmethod
    def check(cls, ctx, rec, target, path):
        """Pass-1 checks of this target (no writes). Raise PackageError to reject."""

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

    def __init__(self, path, flags=os.O_WRONLY):
        self.fd = os.open(path, flags)

    def write(self, block):
        write_all(self.fd, block)

    def commit(self):
        os.fsync(self.fd)
        os.close(self.fd)

    def abort(self):
        os.close(self.fd)


class ReplacedFile(AtomicFile):
    """A file target replaced atomically, keeping its owner; mode 0 keeps the existing
    mode (0644 for a new file), otherwise the permission bits of mode are applied."""

    def __init__(self, path, mode):
        super().__init__(path, suffix=".ota", makedirs=True)
        self.mode = mode

    def commit(self):
        try:
            st = os.stat(self.dest)
        except FileNotFoundError:
            st = None
        mode = self.mode
        if not mode:
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
        owner = (st.st_uid, st.st_gid) if st is not None and os.geteuid() == 0 else None
        super().commit(mode=mode & 0o7777, owner=owner)


def check_device_target(ctx, rec, target, path):
    """On a board (no --root) a /dev target must exist: never create a file in /dev."""
    if ctx.root is None and target.startswith("/dev/") and not os.path.exists(path):
        raise PackageError("record %d: target %s does not exist on this board" % (rec.index, target))
