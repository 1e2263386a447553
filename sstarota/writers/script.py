"""script: a shell script carried as a record, piped into sh on the board."""

from .. import schema
from ..errors import InstallError, PackageError
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
        self.parts = []

    def write(self, block):
        self.parts.append(bytes(block))

    def commit(self):
        status = self.ctx.run_script(b"".join(self.parts), "script record %s" % self.target)
        if status != 0:
            raise InstallError("script %s exited with status %d" % (self.target, status))
