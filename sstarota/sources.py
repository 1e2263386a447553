"""Where a package comes from: a file or stdin (a URL would be one more class here).

A source is opened once and hands out a fresh stream of the package bytes for every pass
(gzip inflated in-process). It tells gzip from raw by one check of the first bytes
(schema.is_gzip) and reports what cannot be opened with one error class (InputError).
"""

import gzip
import io
import os
import sys
import tempfile

from .errors import InputError, PackageError, UsageError
from .fsutil import unlink_quietly
from .schema import is_gzip

BLOCK = 1 << 20


def refuse_gzip(head, name, hint):
    """A raw package was asked for: gzip data is a PackageError saying what to do instead."""
    if is_gzip(head):
        raise PackageError("%s is gzip-compressed: %s" % (name, hint))


def _inflated(f, gz):
    return gzip.GzipFile(fileobj=f, mode="rb") if gz else f


class FileSource:
    """A package file, opened once; every pass reads it from the start through that fd.

    gz: True (gzip), None (sniff the magic), False (raw: gzip data is refused with raw_hint)."""

    def __init__(self, path, gz=None, raw_hint="use -x"):
        self.name = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise InputError("cannot open package %s: %s" % (path, exc.strerror or exc)) from None
        head = os.pread(self.fd, 2, 0)
        if gz is False:
            try:
                refuse_gzip(head, path, raw_hint)
            except PackageError:
                self.close()
                raise
        self.gz = is_gzip(head) if gz is None else gz

    @property
    def size(self):
        return os.fstat(self.fd).st_size

    def stream(self):
        f = os.fdopen(os.dup(self.fd), "rb")
        f.seek(0)
        return _inflated(f, self.gz)

    def close(self):
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Tee(io.RawIOBase):
    def __init__(self, src, spool):
        self.src = src
        self.spool = spool

    def readable(self):
        return True

    def readinto(self, b):
        data = self.src.read(len(b))
        n = len(data)
        b[:n] = data
        self.spool.write(data)
        return n


class StdinSource:
    """A package on a pipe: the first pass spools it (as received) under the work directory."""

    def __init__(self, stream, spool_dir, gz=None):
        self.name = "<stdin>"
        self.src = stream
        fd, self.spool_path = tempfile.mkstemp(prefix="sstarota-spool-", dir=spool_dir)
        self.spool = os.fdopen(fd, "w+b")
        head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
        self.gz = is_gzip(head) if gz is None else gz
        self.passes = 0

    def stream(self):
        self.passes += 1
        if self.passes == 1:
            return _inflated(io.BufferedReader(_Tee(self.src, self.spool), BLOCK), self.gz)
        self.spool.flush()
        f = os.fdopen(os.dup(self.spool.fileno()), "rb")
        f.seek(0)
        return _inflated(f, self.gz)

    def close(self):
        self.spool.close()
        unlink_quietly(self.spool_path)


def open_source(path, gz=None, tmpdir=None, stdin=None):
    """A package source for a path, or for '-' (stdin, spooled under tmpdir)."""
    if path == "-":
        if not tmpdir:
            raise UsageError("reading the package from stdin needs -t DIR to spool it")
        return StdinSource(stdin or sys.stdin.buffer, tmpdir, gz)
    return FileSource(path, gz)
