"""Targets reached through directory file descriptors, so that nothing can redirect a write.

A package names its targets; the installer runs as root. Checking a path and then using it
by name leaves a window in which a directory on the way can be swapped for a symlink. Here
a target's parent directory is opened by walking from the root one component at a time
(``O_NOFOLLOW | O_DIRECTORY``), and every create, write, rename and unlink happens relative
to that descriptor: once it is open, a swap of any path component cannot move the write.

A symlink met on the way is read and followed by hand: a relative one continues from the
directory that holds it, an absolute one starts again at the root. Under ``--root`` an
absolute link must name a place inside the root (as the host sees it) and ``..`` may never
climb above the root; a link that leads out is refused. Without a root the walk starts at
``/`` and follows links as the kernel would. (Linux's ``openat2(RESOLVE_BENEATH)`` does the
same in one call, but board kernels 4.9 and 5.10 do not all have it.)

Our temporary files are named ``.sstarota-<pid>-<random>.tmp``: short, so that a 255-byte
target name still leaves room for them, and recognisable, so that a later run removes the
ones whose process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from .errors import PackageError
from .fsutil import Closing, read_small
from .recordclass import TYPE_CHECKING, dataclass

if TYPE_CHECKING:
    from typing import Optional

MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: our temp files beside targets, and our work files under -t (exactly these shapes, nothing else)
TEMP_BESIDE = re.compile(r"^\.sstarota-(\d+)-[0-9a-f]{8}\.tmp$")
TEMP_WORK = re.compile(r"^sstarota-(\d+)-[0-9a-f]{8}-(patch|spool|script|begin-script|end-script)$")
WORK_DIR = re.compile(r"^sstarota-(\d+)-[0-9a-f]{8}-work$")


class TargetProblem(PackageError):
    """A target cannot be reached or is of a kind its record cannot write."""

    reason = "target"


def _components(path):
    return [c for c in path.split("/") if c not in ("", ".")]


@dataclass
class Located(Closing):
    """A target's parent directory (an open fd) and its last component."""

    dirfd: int
    name: str
    target: str  # as the package names it
    where: str  # the directory path as reached, for messages

    def lstat(self):
        try:
            return os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @property
    def path(self):
        return os.path.join(self.where, self.name)

    def open(self, flags, mode=0o600):
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.dirfd)

    def unlink(self):
        os.unlink(self.name, dir_fd=self.dirfd)

    def close(self):
        if self.dirfd >= 0:
            os.close(self.dirfd)
            self.dirfd = -1


class Root:
    """Where targets live: a staging directory (``--root``) or the board's ``/``."""

    def __init__(self, root=None):
        self.given = root
        self.real = os.path.realpath(root) if root is not None else "/"
        self.confined = root is not None

    def _open_root(self):
        return os.open(self.real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _out(self, target, link, text):
        return TargetProblem("target %s: %s is a symlink to %s, which leads out of the root %s"
                             % (target, link, text, self.given))

    def _absolute(self, target, link, text):
        """The components, below the root, of an absolute symlink's text ('..' kept: the walk
        climbs through what it has really opened, as the kernel does)."""
        comps = _components(text)
        if not self.confined:
            return comps
        root = _components(self.real)
        if comps[:len(root)] != root:
            raise self._out(target, link, text)
        return comps[len(root):]

    def locate(self, target, create=False, follow_final=False, missing_ok=False):
        """The parent directory of target, opened safely, and the final name in it.

        create: make missing directories (0755) on the way. follow_final: when the final
        component is a symlink, follow it (confined) to what it names. missing_ok: None when
        a directory on the way does not exist (instead of TargetProblem).
        Raises TargetProblem (nothing to write there) or OSError from the kernel."""
        todo = _components(target)
        if not todo:
            raise TargetProblem("target %s names the root itself" % target)
        stack = [(self._open_root(), self.real)]
        links = 0
        try:
            while True:
                c = todo.pop(0)
                fd, where = stack[-1]
                if c == "..":
                    if len(stack) == 1:
                        if self.confined:
                            raise TargetProblem("target %s: a symlink on the way climbs above the root %s"
                                                % (target, self.given))
                    else:
                        os.close(stack.pop()[0])
                    if not todo:
                        raise TargetProblem("target %s names a directory" % target)
                    continue
                last = not todo
                if last:
                    st = _lstat(c, fd)
                    if st is not None and stat.S_ISLNK(st.st_mode) and follow_final:
                        links, todo = self._expand(target, fd, where, c, links, todo, stack)
                        continue
                    top_fd, top_where = stack.pop()
                    return Located(top_fd, c, target, top_where)
                try:
                    sub = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create and missing_ok:
                        return None
                    if not create:
                        raise TargetProblem("target %s: %s does not exist" % (target, os.path.join(where, c)))
                    try:
                        os.mkdir(c, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    sub = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = _lstat(c, fd)
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        links, todo = self._expand(target, fd, where, c, links, todo, stack)
                        continue
                    raise TargetProblem("target %s: %s is not a directory" % (target, os.path.join(where, c)))
                stack.append((sub, os.path.join(where, c)))
        finally:
            for fd, _ in stack:
                os.close(fd)

    def _expand(self, target, fd, where, name, links, todo, stack):
        links += 1
        if links > MAX_LINKS:
            raise TargetProblem("target %s: too many levels of symlinks (a loop?) at %s"
                                % (target, os.path.join(where, name)))
        text = os.readlink(name, dir_fd=fd)
        if text.startswith("/"):
            comps = self._absolute(target, os.path.join(where, name), text)
            while len(stack) > 1:
                os.close(stack.pop()[0])
        else:
            comps = text.split("/")
        comps = [c for c in comps if c not in ("", ".")]
        if not comps and not todo:
            raise TargetProblem("target %s names a directory" % target)
        return links, comps + todo

    def read(self, target, limit):
        """The bytes of the regular file at target (symlinks followed, confined), at most limit
        of them; None when it or a directory on the way does not exist. OSError when it is
        not a regular file or larger (fsutil.read_small: a FIFO is never waited on),
        TargetProblem when the walk leads out of the root."""
        loc = self.locate(target, follow_final=True, missing_ok=True)
        if loc is None:
            return None
        with loc:
            try:
                return read_small(loc.name, limit, dir_fd=loc.dirfd, follow=False)
            except FileNotFoundError:
                return None

    def listdir(self, target):
        """The names in the directory at target (symlinks followed, confined); None when it does
        not exist or is not a directory."""
        loc = self.locate(target, follow_final=True, missing_ok=True)
        if loc is None:
            return None
        with loc:
            try:
                fd = loc.open(os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK)
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                return os.listdir(fd)
            finally:
                os.close(fd)

    def resolve_path(self, target):
        """The host path of a target as a string (for messages and the dry-run plan)."""
        if not self.confined:
            return target
        return os.path.join(self.real, *_components(target))


def fd_path(fd):
    """A path that names an open file itself (no re-resolution of the name it was opened by):
    for sysfs look-ups by st_rdev and for opening the same node again."""
    return "/proc/self/fd/%d" % fd


def _lstat(name, dirfd):
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------- our temp files


def temp_name(kind="tmp"):
    """A short, recognisable name for a file of ours: .sstarota-<pid>-<random>.tmp."""
    rand = os.urandom(4).hex()
    if kind == "tmp":
        return ".sstarota-%d-%s.tmp" % (os.getpid(), rand)
    return "sstarota-%d-%s-%s" % (os.getpid(), rand, kind)


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def untrusted(path):
    """Why another user could change what path leads to (None: no one but root and this user
    can): every directory on the way, and every symlink followed, must be root's or this
    user's, and a directory others can write must be sticky (they cannot rename what is ours
    in it). OSError where the path cannot be walked."""
    me = os.geteuid()
    parts = [c for c in os.path.abspath(path).split("/") if c]
    cur, hops = "/", 0
    st = os.lstat(cur)
    while True:
        if st.st_uid not in (0, me):
            return "%s belongs to uid %d" % (cur, st.st_uid)
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return "%s can be written by others (mode %04o)" % (cur, stat.S_IMODE(st.st_mode))
        if not parts:
            return None
        c = parts.pop(0)
        if c == ".":
            continue
        nxt = os.path.dirname(cur) if c == ".." else os.path.join(cur, c)
        lst = os.lstat(nxt)
        if stat.S_ISLNK(lst.st_mode):
            if lst.st_uid not in (0, me):
                return "%s is a symlink of uid %d" % (nxt, lst.st_uid)
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(nxt)
            parts = [x for x in target.split("/") if x] + parts
            if target.startswith("/"):
                cur, st = "/", os.lstat("/")
            continue
        if not stat.S_ISDIR(lst.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", path)
        cur, st = nxt, lst


class WorkDir:
    """One run's private work directory: made fresh under -t (mode 0700, this user's), every
    work file of the run inside it, removed at the end (and, left by a killed run, by the next
    run). -t itself must be a directory no other user can swap names in: owned by this user
    or root, and writable by others only when sticky (as /tmp is)."""

    def __init__(self, parent, note=None):
        from .errors import UsageError

        try:
            problem = untrusted(parent)
        except OSError as exc:
            raise UsageError("-t %s: %s" % (parent, exc.strerror)) from None
        if problem:
            raise UsageError("-t %s: %s; refused: give -t a directory of this user's (or root's) that only it can "
                             "write, or a sticky one like /tmp, reached through no one else's" % (parent, problem))
        self.parent = parent
        self._sweep(note or (lambda msg: None))
        for _ in range(100):
            path = os.path.join(parent, temp_name("work"))
            try:
                os.mkdir(path, 0o700)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError("-t %s: cannot make a work directory: %s" % (parent, exc.strerror)) from None
        else:
            raise UsageError("-t %s: cannot make a work directory" % parent)
        os.chmod(path, 0o700)
        self.path = path

    def _sweep(self, note):
        import shutil

        try:
            names = os.listdir(self.parent)
        except OSError:
            return
        for name in names:
            m = WORK_DIR.match(name)
            if not m or _alive(int(m.group(1))):
                continue
            path = os.path.join(self.parent, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                shutil.rmtree(path, ignore_errors=True)
                note("removed %s, left by an interrupted run" % path)

    def close(self):
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


class Spool:
    """A work file of ours in a directory (-t): made exclusively (mode 0600), removed on close
    whatever happens (a full disk that fails the final flush again does not keep it)."""

    def __init__(self, directory, kind):
        self.path = os.path.join(directory, temp_name(kind))
        self.f = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   0o600), "w+b")

    def write(self, data):
        self.f.write(data)

    def rewind(self):
        """The file, flushed and positioned at its start, for reading back."""
        self.f.flush()
        self.f.seek(0)
        return self.f

    def close(self):
        try:
            self.f.close()
        except OSError:
            pass
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class StaleCleaner:
    """Removes, once per directory and run, temp files of ours whose process has gone."""

    def __init__(self, note=None):
        self.seen = set()
        self.note = note or (lambda msg: None)
        self.removed = 0

    def sweep(self, dirfd, where, pattern=TEMP_BESIDE):
        st = os.fstat(dirfd)
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            names = os.listdir(dirfd)
        except OSError:
            return
        for name in names:
            m = pattern.match(name)
            if not m or _alive(int(m.group(1))):
                continue
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                os.unlink(name, dir_fd=dirfd)
            except OSError:
                continue
            self.removed += 1
            self.note("removed %s, left by an interrupted run" % os.path.join(where, name))

    def sweep_work_dir(self, path, beside=False):
        """Our work files in -t whose process has gone (beside: our temp files, as beside targets)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            self.sweep(fd, path, TEMP_BESIDE if beside else TEMP_WORK)
        finally:
            os.close(fd)


class AtomicAt:
    """A temp file in an open directory, renamed over the target's name on commit.

    The directory is the one the walk reached: a later swap of a path component cannot
    move the temp file or the rename. Mode 0 keeps the existing file's mode (0644 for a
    new file)."""

    def __init__(self, loc: Located, mode: Optional[int] = None, cleaner: Optional[StaleCleaner] = None):
        self.loc = loc
        if cleaner is not None:
            cleaner.sweep(loc.dirfd, loc.where)
        self.tmp = temp_name()
        fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=loc.dirfd)
        self.f = os.fdopen(fd, "w+b")
        self.mode = mode
        self.done = False

    def write(self, data):
        self.f.write(data)

    def commit(self):
        self.f.flush()
        st = self.loc.lstat()
        if st is not None and not stat.S_ISREG(st.st_mode):
            st = None if stat.S_ISLNK(st.st_mode) else st
        mode = self.mode
        if not mode:
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
        os.fchmod(self.f.fileno(), mode & 0o7777)
        if st is not None and os.geteuid() == 0:
            try:
                os.fchown(self.f.fileno(), st.st_uid, st.st_gid)
            except OSError:
                pass
        os.fsync(self.f.fileno())  # the mode and owner too: a power cut after the rename keeps them
        self.f.close()
        os.rename(self.tmp, self.loc.name, src_dir_fd=self.loc.dirfd, dst_dir_fd=self.loc.dirfd)
        self.done = True
        try:
            os.fsync(self.loc.dirfd)
        except OSError:
            pass

    def abort(self):
        if self.done:
            return
        try:
            self.f.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp, dir_fd=self.loc.dirfd)
        except OSError:
            pass
        self.done = True
