"""Record data for the packer: a length known before writing, then chunks.

(Package sources, what the installer reads a package from, are in sources.py.)
"""

import os
import stat

from ..errors import InputError

CHUNK = 1 << 20


class RecordData:
    """Record data: a length known before writing, then chunks."""

    name = ""
    length = 0

    def chunks(self):
        raise NotImplementedError


class FileData(RecordData):
    """A regular file, streamed; its size must not change while it is packed."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError("cannot read source %s: %s" % (path, exc.strerror)) from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError("source %s is not a regular file" % path)
        self.st = st
        self.length = st.st_size

    def chunks(self):
        done = 0
        try:
            with open(self.path, "rb") as f:
                while True:
                    piece = f.read(CHUNK)
                    if not piece:
                        break
                    done += len(piece)
                    yield piece
        except OSError as exc:
            raise InputError("cannot read source %s: %s" % (self.path, exc.strerror)) from None
        if done != self.length:
            raise InputError("source %s changed size while it was packed (%d -> %d bytes)" % (self.path, self.length, done))


class BytesData(RecordData):
    """Bytes in memory (patches, the manifest)."""

    def __init__(self, data, name=""):
        self.data = data
        self.name = name
        self.length = len(data)

    def chunks(self):
        view = memoryview(self.data)
        for i in range(0, len(view), CHUNK):
            yield view[i : i + CHUNK]

