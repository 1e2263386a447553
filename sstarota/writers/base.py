"""The writer interface, the registry, and the atomic-file helper the writers share."""

import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from ..errors import InstallError, PackageError
from ..fsutil import fsync_dir, unlink_quietly

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
    """Base writer: override check/write/commit/abort as needed."""

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
        pass

    def commit(self):
        pass

    def abort(self):
        pass


class AtomicFile:
    """A temp file beside the destination, renamed over it on commit (never half-written)."""

    def __init__(self, dest, mode=None, keep_from=None):
        self.dest = dest
        d = os.path.dirname(dest) or "."
        os.makedirs(d, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".ota", dir=d)
        self.f = os.fdopen(fd, "w+b")
        self.mode = mode
        self.keep_from = keep_from

    def write(self, data):
        self.f.write(data)

    def commit(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        st = None
        try:
            st = os.stat(self.dest)
        except FileNotFoundError:
            pass
        mode = self.mode
        if not mode:
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
        os.fchmod(self.f.fileno(), mode & 0o7777)
        if st is not None and os.geteuid() == 0:
            try:
                os.fchown(self.f.fileno(), st.st_uid, st.st_gid)
            except OSError:
                pass
        self.f.close()
        os.replace(self.tmp, self.dest)
        fsync_dir(os.path.dirname(self.dest) or ".")

    def abort(self):
        try:
            self.f.close()
        finally:
            unlink_quietly(self.tmp)


def check_device_target(ctx, rec, target, path):
    """On a board (no --root) a /dev target must exist: never create a file in /dev."""
    if ctx.root is None and target.startswith("/dev/") and not os.path.exists(path):
        raise PackageError("record %d: target %s does not exist on this board" % (rec.index, target))


def is_partition(target, path):
    """A raw partition: a device node, or (staging under --root) a file named under /dev/."""
    return is_device(path) or target.startswith("/dev/")


def is_device(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)
