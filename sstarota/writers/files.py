"""file-update, file-add, file-delete: whole files, replaced atomically."""

import os

from .. import schema
from ..errors import InstallError, PackageError
from .base import ReplacedFile, Writer, register


@register(schema.OP_FILE_UPDATE, schema.OP_FILE_ADD)
class FileWriter(Writer):
    """mkdir -p, a temp file in the same directory, fsync, mode, rename over.

    Mode 0 keeps the existing file's mode (0644 for a new file); otherwise the stored mode's
    permission bits (st_mode & 07777) are applied as stored.
    """

    @classmethod
    def check(cls, ctx, rec, target, path):
        if os.path.isdir(path) and not os.path.islink(path):
            raise PackageError("record %d: target %s is a directory" % (rec.index, target))

    def open(self):
        self.out = ReplacedFile(self.path, self.rec.mode & 0o7777)


@register(schema.OP_FILE_DELETE)
class DeleteWriter(Writer):
    @classmethod
    def check(cls, ctx, rec, target, path):
        if os.path.isdir(path) and not os.path.islink(path):
            raise PackageError("record %d: file-delete target %s is a directory" % (rec.index, target))

    def commit(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            self.ctx.note("record %d: %s was already absent" % (self.rec.index + 1, self.target))
        except IsADirectoryError:
            raise InstallError("%s is a directory, not deleted" % self.target) from None
