"""The begin and end scripts: spooled from a verified read of the package, run from there.

Both are read once, through the pass-1 digests, into files of ours under the work
directory before the begin script runs, so the end script can still run when the package
cannot be read any more (the failure it reports may be just that). Scripts are piped into
sh from those files, never held in memory; the files are removed when the update is over.
"""

from ..confine import Spool
from ..errors import InstallError

END_PREAMBLE = 'OTA_STATUS=%d\necho "OTA UPDATA STATUS: ${OTA_STATUS}"\n'


class Scripts:
    def __init__(self, installer, plan):
        self.installer = installer
        self.plan = plan
        self.ctx = installer.ctx
        self.spools = {}

    def __enter__(self):
        if not (self.plan.begin_len or self.plan.end_len) or not self.ctx.run_scripts:
            return self
        stream, reader = self.installer._verified_reader(self.plan)
        try:
            with stream:
                reader.open()
                for what, data in (("begin", reader.begin_script), ("end", reader.end_script)):
                    if data:
                        self.spools[what] = self._spool(what, data)
                reader.begin_script = reader.end_script = b""
        except BaseException:
            self.close()
            raise
        return self

    def _spool(self, what, data):
        try:
            spool = Spool(self.ctx.tmpdir, what + "-script")
        except OSError as exc:
            raise InstallError("cannot keep the %s script in the work directory %s: %s; nothing was written"
                               % (what, self.ctx.tmpdir, exc.strerror)) from None
        try:
            spool.write(data)
            spool.rewind()
        except OSError as exc:
            spool.close()
            raise InstallError("cannot keep the %s script in the work directory %s: %s; nothing was written"
                               % (what, self.ctx.tmpdir, exc.strerror)) from None
        return spool

    def run_begin(self):
        return self._run("begin", b"", "begin script")

    def run_end(self, status):
        return self._run("end", (END_PREAMBLE % status).encode(), "end script")

    def _run(self, what, preamble, label):
        if not self.ctx.run_scripts:
            self.ctx.note("%s skipped (--no-scripts)" % label)
            return 0
        return self.ctx.run_script(self.spools[what].rewind(), label, preamble)

    def close(self):
        for spool in self.spools.values():
            spool.close()
        self.spools = {}

    def __exit__(self, *exc):
        self.close()
