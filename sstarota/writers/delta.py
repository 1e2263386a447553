"""file-diff (a delta): a BSDIFF40 patch applied to the target's current content, streamed.

The patch is spooled under the work directory (-t). The new content goes to a temp file
beside a file target (renamed over it once complete and of the declared size), or, for a
device target (a raw partition delta), to a temp file under -t that is then written to the
device from offset 0.
"""

import hashlib
import os
import tempfile

from .. import delta, schema
from ..errors import InstallError
from ..confine import Spool
from ..fsutil import copy_stream
from .base import Writer, register, replaced_file
from .block import BlockWriter


class _Hashing:
    """A write-only file wrapper that counts and hashes what passes."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data):
        self.h.update(data)
        self.n += len(data)
        return self.f.write(data)


@register(schema.OP_FILE_DIFF)
class DeltaWriter(Writer):
    def open(self):
        self.spool = Spool(self.ctx.tmpdir, "patch")
        self.patch = self.spool.f

    def write(self, block):
        self.patch.write(block)

    def _old(self):
        from ..install.plan import open_current

        old = open_current(self.dest)
        old.seek(0, os.SEEK_END)
        return old, old.tell()

    def commit(self):
        self.patch.flush()
        old, old_size = self._old()
        with old:
            if self.dest.partition:
                self._to_device(old, old_size)
            else:
                out = replaced_file(self.ctx, self.dest, self.rec.mode)
                try:
                    self._patch(old, old_size, out.f)
                except BaseException:
                    out.abort()
                    raise
                out.commit()
        self._cleanup()

    def _patch(self, old, old_size, out):
        """Patch into out; the result's length (and, with a manifest, SHA-256) is checked
        here, before the caller lets it replace anything."""
        self.patch.seek(0)
        want = delta.patch_new_size(self.patch.read(delta.HEADER))
        sink = _Hashing(out)
        progress = self.ctx.progress
        state = {"done": 0}

        def on_bytes(done, total):
            if progress is not None:
                progress.add(done - state["done"])
            state["done"] = done

        try:
            size = delta.patch_stream(old, old_size, self.patch, sink, on_bytes=on_bytes)
        except delta.WrongSource as exc:
            raise InstallError("%s is not the content this delta was made from (%s); nothing replaced"
                               % (self.target, exc)) from None
        if size != want or sink.n != want:
            raise InstallError("patching %s gave %d bytes, the patch declares %d" % (self.target, sink.n, want))
        if self.expect is not None:
            got = sink.h.hexdigest()
            if sink.n != self.expect.new_len or got != self.expect.new_sha256:
                raise InstallError("patching %s gave sha256 %s (%d bytes), the manifest expects %s (%d bytes);"
                                   " nothing replaced" % (self.target, got, sink.n, self.expect.new_sha256,
                                                          self.expect.new_len))

    def _to_device(self, old, old_size):
        with tempfile.TemporaryFile(dir=self.ctx.tmpdir) as new:
            self._patch(old, old_size, new)
            new.seek(0)
            w = BlockWriter(self.ctx, self.rec, self.dest)
            w.open()
            try:
                copy_stream(new.read, w.write)
            except BaseException:
                w.abort()
                raise
            w.commit()

    def _cleanup(self):
        self.spool.close()

    def abort(self):
        self._cleanup()
