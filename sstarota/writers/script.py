"""script: a shell script carried as a record, spooled under the work directory, then
piped into sh from there (never held in memory)."""

from .. import schema
from ..confine import Spool
from ..errors import PackageError
from ..schema import MAX_SCRIPT
from .base import Writer, register


@register(schema.OP_SCRIPT)
class ScriptWriter(Writer):
    targets = False  # it names the script, for messages
    spools = True

    @classmethod
    def check(cls, ctx, rec, target, path):
        if rec.data_len > MAX_SCRIPT:
            raise PackageError("record %d: script of %d bytes exceeds the %d MiB limit"
                               % (rec.index + 1, rec.data_len, MAX_SCRIPT >> 20))

    def open(self):
        self.spool = Spool(self.ctx.tmpdir, "script")

    def write(self, block):
        self.spool.write(block)

    def commit(self):
        try:
            status = self.ctx.run_script(self.spool.rewind(), "script record %s" % self.target)
        finally:
            self.abort()
        if status != 0:
            self.ctx.script_failed("script %s" % self.target, status)

    def abort(self):
        self.spool.close()
