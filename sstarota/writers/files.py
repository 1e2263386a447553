"""file-update, file-add, file-delete: whole files, replaced atomically.

Every file operation happens in the directory the target walk opened (confine.py): a
directory swapped for a symlink after the check cannot redirect it.
"""

from .. import schema
from .base import Writer, register, replaced_file
from .compare import Known, whole_file


@register(schema.OP_FILE_UPDATE, schema.OP_FILE_ADD)
class FileWriter(Writer):
    """mkdir -p, a temp file in the same directory, fsync, mode, rename over.

    Mode 0 keeps the existing file's mode (0644 for a new file); otherwise the stored mode's
    permission bits (st_mode & 07777) are applied as stored.
    """

    @classmethod
    def makes_dirs(cls, image_file):
        return True

    @classmethod
    def comparer(cls, rec, dest):
        return whole_file(rec, dest) if dest.kind in ("file", "device") else Known(False)

    def open(self):
        self.out = replaced_file(self.ctx, self.dest, self.rec.mode)

    def commit(self):
        super().commit()
        self.ctx.written.files += 1


@register(schema.OP_FILE_DELETE)
class DeleteWriter(Writer):
    @classmethod
    def comparer(cls, rec, dest):
        return Known(dest.kind == "absent")

    def commit(self):
        loc = self.dest.loc
        if loc is None or loc.lstat() is None:
            self.ctx.note("record %d: %s was already absent" % (self.rec.index + 1, self.target))
            return
        loc.unlink()
        self.ctx.written.files += 1
