"""Where a package comes from: a file, a stream (stdin, a pipe or FIFO given by path), or
an http(s) URL (UrlSource: spooled under the work directory, or read from the server once
per pass with --no-spool; the HTTP side is netsource.py, imported only for a URL).

A source is opened once and hands out a fresh stream of the package bytes for every pass
(gzip inflated in-process). It tells gzip from raw by one check of the first bytes
(schema.is_gzip) and reports what cannot be opened or read with one error class
(InputError). A stream cannot be read twice: its first pass spools it, as received, under
the work directory, and later passes read the spool.

Bytes after the end of the gzip data (some products append a signature block to
SStarOta.bin.gz; busybox `gunzip -c` ignores them) are never read as package data: the
first pass says how many there were. Concatenated gzip members are inflated in turn.
"""

import io
import os
import stat
import sys
import zlib

from .confine import Spool
from .errors import InputError, PackageError, UsageError
from .fsutil import Closing, copy_stream
from .schema import GZIP_MAGIC, is_gzip

BLOCK = 128 << 10  # buffers over a stream or a download: small, for a 64 MB board
#: how many bytes after the gzip data a stream is read to count them (a file is counted by its size)
TRAILING_CAP = 1 << 20


def refuse_gzip(head, name, hint):
    """A raw package was asked for: gzip data is a PackageError saying what to do instead."""
    if is_gzip(head):
        raise PackageError("%s is gzip-compressed: %s" % (name, hint))


def refuse_raw(head, name):
    """A gzip package was asked for (-x): data that is not gzip is a PackageError saying so."""
    if head and not is_gzip(head):
        raise PackageError("%s is not gzip-compressed: use -r" % name)


class GzipCorrupt(EOFError):
    """The gzip data itself is damaged or cut short (not the package inside it)."""


class Inflated(io.RawIOBase):
    """The inflated bytes of a gzip file: member after member; what follows the last
    member and is not gzip is counted (trailing) and never returned."""

    def __init__(self, raw, on_trailing=None):
        super().__init__()
        self.raw = raw
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""
        self.done = False
        self.trailing = 0
        self.on_trailing = on_trailing

    def readable(self):
        return True

    def _input(self):
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.raw.read(1 << 16)

    def readinto(self, b):
        while not self.done:
            if self.z.eof:
                rest = self.z.unused_data + self._input()
                while 0 < len(rest) < 2:
                    more = self.raw.read(1 << 16)
                    if not more:
                        break
                    rest += more
                if rest[:2] == GZIP_MAGIC:
                    self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self.pending = rest
                    continue
                self._finish(rest)
                break
            data = self.z.unconsumed_tail or self._input()
            if not data:
                raise GzipCorrupt("the gzip data ends before its end marker (truncated)")
            try:
                out = self.z.decompress(data, len(b))
            except zlib.error as exc:
                raise GzipCorrupt("the gzip data is corrupt (%s)" % exc) from None
            if out:
                b[:len(out)] = out
                return len(out)
        return 0

    def _finish(self, rest):
        """Count what follows the gzip data without reading it as data: a file by its size, a
        stream up to TRAILING_CAP bytes (never drained without end, never spooled further)."""
        n = len(rest)
        try:
            n += os.fstat(self.raw.fileno()).st_size - self.raw.tell() if self.raw.seekable() else 0
            counted = self.raw.seekable()
        except (AttributeError, OSError, io.UnsupportedOperation):
            counted = False
        more_than = False
        while not counted:
            more = self.raw.read(min(1 << 16, TRAILING_CAP + 1 - n))
            if not more:
                break
            n += len(more)
            if n > TRAILING_CAP:
                more_than = True
                break
        self.done = True
        self.trailing = n
        if n and self.on_trailing is not None:
            self.on_trailing("more than %d" % TRAILING_CAP if more_than else "%d" % n)

    def close(self):
        try:
            self.raw.close()
        finally:
            super().close()


def _inflated(f, gz, on_trailing=None):
    return io.BufferedReader(Inflated(f, on_trailing), 64 << 10) if gz else f


class _Passes:
    """A source's passes over the package: the first one says what follows the gzip data."""

    passes = 0
    warn = None

    def _trailing(self, n):
        if self.passes == 1 and self.warn is not None:
            self.warn("%s: %s byte(s) after the end of the gzip data ignored (not package data)" % (self.name, n))


def _kind(fd):
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return "file"
    return "stream"  # a pipe, FIFO, socket or character device: read once, in order


class FileSource(Closing, _Passes):
    """A package file, opened once; every pass reads it from the start through that fd.

    gz: True (gzip), None (sniff the magic), False (raw: gzip data is refused with raw_hint)."""

    def __init__(self, path, gz=None, raw_hint="use -x", warn=None):
        self.name = path
        self.warn = warn
        self.passes = 0
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError("cannot open package %s: %s" % (path, exc.strerror or exc)) from None
        try:
            if _kind(self.fd) == "dir":
                raise InputError("package %s is a directory: give the package file" % path)
            try:
                head = os.pread(self.fd, 2, 0)
            except OSError as exc:
                raise InputError("cannot read package %s: %s" % (path, exc.strerror or exc)) from None
            if gz is False:
                refuse_gzip(head, path, raw_hint)
            if gz is True:
                refuse_raw(head, path)
            self.gz = is_gzip(head) if gz is None else gz
        except BaseException:
            self.close()
            raise

    @property
    def size(self):
        return os.fstat(self.fd).st_size

    @property
    def inflates(self):
        """Does every pass inflate the package again? (Then one spool of it saves the work.)"""
        return bool(self.gz)

    def stream(self):
        self.passes += 1
        f = os.fdopen(os.dup(self.fd), "rb")
        f.seek(0)
        return _inflated(f, self.gz, self._trailing)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Tee(io.RawIOBase):
    def __init__(self, src, spool, prefix):
        self.src = src
        self.spool = spool
        self.prefix = prefix

    def readable(self):
        return True

    def readinto(self, b):
        if self.prefix:
            data, self.prefix = self.prefix[:len(b)], self.prefix[len(b):]
        else:
            data = self.src.read(len(b))
            self.spool.write(data)
        n = len(data)
        b[:n] = data
        return n


class StreamSource(_Passes):
    """A package on a pipe: the first pass spools it (as received) under the work directory."""

    def __init__(self, stream, spool_dir, gz=None, name="<stdin>", warn=None, closing=None):
        self.name = name
        self.src = stream
        self.warn = warn
        self.closing = closing
        try:
            self.spool = Spool(spool_dir, "spool")
        except OSError as exc:
            raise InputError("cannot spool the package %s in the work directory %s: %s"
                             % (name, spool_dir, exc.strerror or exc)) from None
        try:
            head = b""
            while len(head) < 2:  # a pipe may hand out one byte at a time
                piece = stream.read(2 - len(head))
                if not piece:
                    break
                head += piece
            self.spool.write(head)
        except OSError as exc:
            self.close()
            raise InputError("cannot read package %s: %s" % (name, exc.strerror or exc)) from None
        self.head = head
        if gz is True and len(head) >= 2:
            try:
                refuse_raw(head[:2], name)
            except PackageError:
                self.close()
                raise
        self.gz = is_gzip(head) if gz is None else gz
        self.passes = 0

    #: the first pass spools the raw stream under -t as it reads: an inflated spool there would
    #: compete with it for the room (and a full -t would end that read), so the package is
    #: inflated again from the raw spool
    inflates = False

    def stream(self):
        self.passes += 1
        if self.passes == 1:
            return _inflated(io.BufferedReader(_Tee(self.src, self.spool, self.head), BLOCK), self.gz,
                             self._trailing)
        f = os.fdopen(os.dup(self.spool.rewind().fileno()), "rb")
        return _inflated(f, self.gz)

    def close(self):
        try:
            self.spool.close()
        finally:
            if self.closing is not None:
                self.closing.close()
                self.closing = None


class UrlSource(_Passes):
    """A package at an http(s) URL. Spooled (default): downloaded once under the work
    directory, after a check that it fits there, resuming dropped connections; every pass
    reads the spool, which is removed on close. Not spooled: every pass GETs the URL again,
    pinned to the first answer's length and validator (netsource.Remote), and the later
    passes are checked block by block against the verify pass anyway (install/blocks.py).

    A body the server sent with Content-Encoding: gzip is gzip data whatever -x or -r says,
    and is inflated; when what comes out is gzip again (a server compressing a .gz on the
    fly), that is inflated too. name is the URL as messages show it (no password)."""

    def __init__(self, url, spool_dir=None, gz=None, net=None, spool=True, report=None, warn=None):
        from . import netsource

        self.gz = gz
        self.warn = warn
        self.passes = 0
        self.file = None
        self.remote = netsource.Remote(url, net)
        self.name = self.remote.name
        if spool:
            self.file = self._download(netsource, spool_dir or os.environ.get("TMPDIR") or "/tmp", report)

    def _download(self, netsource, spool_dir, report):
        meter = netsource.Meter(report) if report else None
        src = netsource.HttpStream(self.remote, meter)
        try:
            need = self.remote.length
            try:
                st = os.statvfs(spool_dir)
            except OSError as exc:
                raise InputError("cannot spool the package %s in the work directory %s: %s"
                                 % (self.name, spool_dir, exc.strerror or exc)) from None
            if need is not None and need > st.f_bavail * st.f_frsize:
                raise InputError("the package %s is %d bytes but the work directory %s has %d bytes free: give "
                                 "-t DIR with room, or --no-spool" % (self.name, need, spool_dir,
                                                                      st.f_bavail * st.f_frsize))
            spool = Spool(spool_dir, "spool")
            try:
                copy_stream(src.read, spool.write, BLOCK)
                spool.rewind()
                if meter is not None:
                    meter(src.offset, src.offset, force=True)
                source = FileSource(spool.path, True if self.remote.coded else self.gz, warn=self.warn)
            finally:
                spool.close()  # the open FileSource keeps the bytes until it is closed
        except OSError as exc:
            raise InputError("cannot spool the package %s in the work directory %s: %s"
                             % (self.name, spool_dir, exc.strerror or exc)) from None
        finally:
            src.close()
        source.name = self.name
        return source

    @property
    def inflates(self):
        """Spooled: as the file does (or the server's gzip coding). Not spooled (--no-spool):
        nothing is kept under -t, so no."""
        return self.file is not None and (self.file.inflates or bool(self.remote.coded))

    def stream(self):
        self.passes += 1
        if self.file is not None:
            return self._decoded(self.file.stream())
        from .netsource import HttpStream

        f = io.BufferedReader(HttpStream(self.remote), BLOCK)
        if self.remote.coded:
            return self._decoded(_inflated(f, True, self._trailing))
        if self.gz is None:
            self.gz = is_gzip(f.peek(2)[:2])
        return _inflated(f, self.gz, self._trailing)

    def _decoded(self, stream):
        """Content-Encoding: gzip over a gzip file: the file's own gzip layer inflated too."""
        if not self.remote.coded:
            return stream
        try:
            head = stream.peek(2)[:2]
        except (OSError, EOFError, zlib.error):
            return stream  # the package reader meets the same error and names it
        return _inflated(stream, True, self._trailing) if is_gzip(head) else stream

    def close(self):
        if self.file is not None:
            self.file.close()


def open_source(path, gz=None, tmpdir=None, stdin=None, warn=None, net=None, spool=True, report=None):
    """A package source for a path, a URL, or '-' (stdin); streams are spooled under tmpdir."""
    if path.startswith(("http://", "https://")):
        return UrlSource(path, tmpdir, gz, net, spool, report, warn)
    if path == "-":
        if not tmpdir:
            raise UsageError("reading the package from stdin needs -t DIR to spool it")
        return StreamSource(stdin or sys.stdin.buffer, tmpdir, gz, warn=warn)
    source = FileSource(path, gz, warn=warn) if not _is_stream_path(path) else None
    if source is not None:
        return source
    if not tmpdir:
        raise UsageError("the package %s is a pipe: reading it needs -t DIR to spool it" % path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError("cannot open package %s: %s" % (path, exc.strerror or exc)) from None
    return StreamSource(f, tmpdir, gz, name=path, warn=warn, closing=f)


def _is_stream_path(path):
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # FileSource says why
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)
