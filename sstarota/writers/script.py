"""script: a shell script carried as a record, spooled under the work directory, then
piped into sh from there (never held in memory)."""

import os

from .. import schema
from ..confine import temp_name
from ..errors import PackageError
from ..fsutil import unlink_quietly
from ..schema import MAX_SCRIPT
from .base import Writer, register


@register(schema.OP_SCRIPT)
class ScriptWriter(Writer):
    @classmethod
    def check(cls, ctx, rec, target, path):
        if rec.data_len > MAX_SCRIPT:
            raise PackageError("record %d: script of %d bytes exceeds the %d MiB limit"
                               % (rec.index, rec.data_len, MAX_SCRIPT >> 20))

    def open(self):
        self.spool_path = os.path.join(self.ctx.tmpdir, temp_name("script"))
        self.spool = open(self.spool_path, "x+b")

    def write(self, block):
        self.spool.write(block)

    def commit(self):
        self.spool.flush()
        self.spool.seek(0)
        try:
            status = self.ctx.run_script(self.spool, "script record %s" % self.target)
        finally:
            self.abort()
        if status != 0:
            self.ctx.script_failed("script %s" % self.target, status)

    def abort(self):
        try:
            self.spool.close()
        except OSError:
            pass
        finally:
            unlink_quietly(self.spool_path)
