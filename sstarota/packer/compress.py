"""otapack --gzip: a reproducible gzip of a package, streamed."""

import gzip
import os
import stat

from ..errors import InputError
from ..fsutil import AtomicFile
from .data import CHUNK


def gzip_package(path, keep=False):
    """Write path + '.gz' reproducibly (no name, mtime 0, level 9) by streaming."""
    out = path + ".gz"
    try:
        src = open(path, "rb")
    except OSError as exc:
        raise InputError("cannot open %s: %s" % (path, exc.strerror)) from None
    with src, AtomicFile(out, sync=False) as dest:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=dest.f, mtime=0) as gz:
            while True:
                piece = src.read(CHUNK)
                if not piece:
                    break
                gz.write(piece)
        dest.commit(mode=stat.S_IMODE(os.fstat(src.fileno()).st_mode))
    if not keep:
        os.unlink(path)
    return out

