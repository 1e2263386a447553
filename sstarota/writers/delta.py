"""file-diff (a delta): a BSDIFF40 patch applied to the target's current content, streamed.

The patch is spooled under the work directory (-t). The new content goes to a temp file
beside a file target (renamed over it once complete and of the declared size), or, for a
device target (a raw partition delta), to a stash in the state directory (state.py)
or, without one, a temp file under -t, that is then written to the device from offset 0.
"""

import hashlib
import os
import tempfile

from .. import delta, schema
from ..confine import Spool
from ..errors import InstallError
from ..flashio import open_current
from ..fsutil import copy_stream, create_new, fsync_dir, open_regular, unlink_quietly
from ..state import stash_ok
from .base import Writer, partition_node, register, replaced_file
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
    devices = True  # a file, or a raw partition's content
    delta = True
    spools = True  # the patch

    @classmethod
    def device_supported(cls, st, path):
        return partition_node(st, path)

    @classmethod
    def device_bytes(cls, rec, result_size):
        return result_size, "the delta's result"

    stash = None  # a stash of this target's result to write (the plan found one: a re-run)
    source = None  # without a manifest: (patch hex, old length, old sha256 hex), for the ledger

    def open(self):
        self.spool = Spool(self.ctx.tmpdir, "patch")
        self.patch = self.spool.f

    def write(self, block):
        self.patch.write(block)

    def _old(self):
        old = open_current(self.dest)
        old.seek(0, os.SEEK_END)
        return old, old.tell()

    def commit(self):
        self.patch.flush()
        if self.stash is not None:
            self._from_stash()
            self._cleanup()
            return
        old, old_size = self._old()
        with old:
            if self.dest.partition:
                self._to_device(old, old_size)
            else:
                out = replaced_file(self.ctx, self.dest, self.rec.mode)
                try:
                    n, sha = self._patch(old, old_size, out.f)
                    if self.ctx.state is not None and self.expect is None:  # how a re-run knows it is done
                        self.ctx.state.expect(self.rec.index, self.target, sha, n, source=self.source)
                except BaseException:
                    out.abort()
                    raise
                out.commit()
                self.ctx.written.files += 1
        self._cleanup()

    def _patch(self, old, old_size, out):
        """Patch into out; the result's length (and, with a manifest, SHA-256) is checked
        here, before the caller lets it replace anything. Returns (length, sha256 hex)."""
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
        got = sink.h.hexdigest()
        if self.expect is not None and (sink.n != self.expect.new_len or got != self.expect.new_sha256):
            raise InstallError("patching %s gave sha256 %s (%d bytes), the manifest expects %s (%d bytes);"
                               " nothing replaced" % (self.target, got, sink.n, self.expect.new_sha256,
                                                      self.expect.new_len))
        return sink.n, got

    def _to_device(self, old, old_size):
        """The result goes to a file first: a stash in the state directory (complete and fsynced
        before the partition is touched, so that a re-run can finish from it), else a temp file."""
        state = self.ctx.state
        if state is None:
            with tempfile.TemporaryFile(dir=self.ctx.tmpdir) as new:
                self._patch(old, old_size, new)
                self._write_device(new)
            return
        path = state.stash_path(self.rec.index, self.target)
        with create_new(path + ".tmp") as new:
            try:
                n, sha = self._patch(old, old_size, new)
                new.flush()
                os.fsync(new.fileno())
            except BaseException:
                unlink_quietly(path + ".tmp")
                raise
            os.replace(path + ".tmp", path)
            fsync_dir(state.path)
            state.expect(self.rec.index, self.target, sha, n, stash=path, source=self.source)
            self._write_device(new)

    def _from_stash(self):
        """A re-run: the partition is neither old nor new; its result was stashed complete."""
        pending = self.ctx.state.pending_for(self.ctx.state.package, self.rec.index, self.target)
        if pending is None or not stash_ok(self.stash, pending):
            raise InstallError("the stash %s of %s changed since it was checked; nothing written"
                               % (self.stash, self.target))
        self.ctx.note("%s: writing the result stashed by an interrupted run (%s)" % (self.target, self.stash))
        with open_regular(self.stash) as new:
            self._write_device(new)

    def _write_device(self, new):
        new.seek(0)
        w = BlockWriter(self.ctx, self.rec, self.dest)
        w.open()
        progress = self.ctx.progress

        def write(block):  # the partition's write is progress of its own (the plan counts it)
            w.write(block)
            if progress is not None:
                progress.add(len(block))

        try:
            copy_stream(new.read, write)
        except BaseException:
            w.abort()
            raise
        w.commit()

    def _cleanup(self):
        self.spool.close()

    def abort(self):
        self._cleanup()
