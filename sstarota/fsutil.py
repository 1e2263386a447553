"""Small filesystem helpers shared by the packer and the writers: full writes, quiet
unlinks, directory fsync, the one atomic-replace helper (AtomicFile), opening files
in the state directory without following symlinks (open_regular, create_new), and reading
a small regular file of a bounded size (read_small: configs, keys, the version file)."""

import errno
import os
import stat
import tempfile


def write_all(fd, data):
    """os.write until every byte is written (device writes may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Closing:
    """`with obj:` closes obj (its close()) at the end, whatever happens."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: how much moves at once when copying: small, for a 64 MB board
IO_CHUNK = 128 << 10


def copy_stream(read, write, size=IO_CHUNK):
    """Copy read(size) pieces to write() until read gives nothing."""
    while True:
        piece = read(size)
        if not piece:
            return
        write(piece)


def unlink_quietly(path):
    """Remove a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(path):
    """fsync a directory (after a rename in it); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    fsync_and_close(fd)


def fsync_and_close(fd):
    """fsync fd, best effort (not every node supports it), then close it."""
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A temp file beside dest, renamed over it on commit: dest is never half-written.

    sync: fsync the file before the rename and its directory after (power-loss safe).
    Used as a context manager, an exception before commit() removes the temp file.
    """

    def __init__(self, dest, suffix=".tmp", sync=True, makedirs=False):
        self.dest = dest
        self.sync = sync
        d = os.path.dirname(os.path.abspath(dest))
        if makedirs:
            os.makedirs(d, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=suffix, dir=d)
        self.f = os.fdopen(fd, "w+b")

    def write(self, data):
        self.f.write(data)

    def commit(self, mode=None, owner=None):
        """Rename the finished file over dest, with mode (permission bits) and owner (uid, gid)
        set first when given (a failed chown is ignored)."""
        self.f.flush()
        if self.sync:
            os.fsync(self.f.fileno())
        if mode is not None:
            os.fchmod(self.f.fileno(), mode)
        if owner is not None:
            try:
                os.fchown(self.f.fileno(), *owner)
            except OSError:
                pass
        self.f.close()
        os.replace(self.tmp, self.dest)
        if self.sync:
            fsync_dir(os.path.dirname(os.path.abspath(self.dest)))

    def abort(self):
        try:
            self.f.close()
        finally:
            unlink_quietly(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()


def umask():
    """The process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_regular(path):
    """A regular file opened for reading, never through a symlink (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file", path)
    return os.fdopen(fd, "rb")


def create_new(path):
    """A new file, created where nothing (not even a symlink) is."""
    unlink_quietly(path)
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "w+b")


RAM_FILESYSTEMS = ("tmpfs", "ramfs", "rootfs", "devtmpfs")


def ram_fs(path, _depth=0):
    """The type of the filesystem that holds path (or would: its nearest existing ancestor)
    when it is kept in RAM (lost at a reboot), else None: tmpfs, ramfs, an initramfs, zram,
    and an overlay whose upper layer is one of them. Read from /proc/self/mountinfo; without
    it (no /proc) nothing can be said: None."""
    p = os.path.realpath(path)
    while not os.path.exists(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    best, found = "", None
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read(1 << 20).decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" ")
        try:
            point = _unescape(fields[4])
            dash = fields.index("-")
            kind, source, opts = fields[dash + 1], fields[dash + 2], fields[dash + 3]
        except (IndexError, ValueError):
            continue
        inside = p == point or p.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, found = point, (kind, source, opts)
    if found is None:
        return None
    kind, source, opts = found
    if kind in RAM_FILESYSTEMS:
        return kind
    if os.path.basename(source).startswith("zram"):
        return "zram"
    if kind == "overlay" and _depth < 4:
        for opt in opts.split(","):
            if opt.startswith("upperdir="):
                upper = ram_fs(_unescape(opt[len("upperdir="):]), _depth + 1)
                return "an overlay on %s" % upper if upper else None
    return None


def mem_available():
    """MemAvailable of /proc/meminfo in bytes (what can be had without swapping), or None."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).splitlines():
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return None


def _unescape(text):
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def read_small(path, limit, dir_fd=None, follow=True):
    """The bytes of a regular file of at most limit bytes (FileNotFoundError when absent).

    Anything else is an OSError and nothing is waited on: the node is first opened with
    O_PATH (no open() side effect: a FIFO does not block, a device is not armed), checked to
    be a regular file, then that very file is opened for reading (through /proc/self/fd; by
    the same name when /proc is missing, checked to be the same file). follow=False: a
    symlink as the last component is refused."""
    nofollow = 0 if follow else os.O_NOFOLLOW
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    # O_PATH is Linux's (every board); elsewhere (a build host) O_NONBLOCK alone keeps a FIFO from blocking
    probe = os.open(path, getattr(os, "O_PATH", flags) | os.O_CLOEXEC | nofollow, dir_fd=dir_fd)
    try:
        st = os.fstat(probe)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_size > limit:
            raise OSError(errno.EFBIG, "larger than %d bytes" % limit, path)
        try:
            fd = os.open("/proc/self/fd/%d" % probe, flags)
        except FileNotFoundError:
            fd = os.open(path, flags | nofollow, dir_fd=dir_fd)
    finally:
        os.close(probe)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise OSError(errno.EAGAIN, "replaced while being opened", path)
        chunks, size = [], 0
        while size <= limit:
            piece = os.read(fd, limit + 1 - size)
            if not piece:
                break
            chunks.append(piece)
            size += len(piece)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, "larger than %d bytes" % limit, path)
    return b"".join(chunks)
