"""One small exception tree; every class carries the exit code the CLIs use for it.

Exit codes (documented in the README and in each command's --help):
  0  success
  1  the update failed after writing began (InstallError)
  2  usage or bad input on the command line (UsageError, InputError)
  3  the package was rejected and nothing was written (PackageError)
"""


class OtaError(Exception):
    """Root of every error sstarota raises on purpose. Message: one line, what/where/fix.

    record: the package record the error concerns (a package.Record), of: how many records
    the package has; str() then names it first ("record 2/3 (file-update /etc/x): ...")."""

    exit_code = 2
    #: a fixed word for what went wrong (the final progress event's `reason`; scripts and
    #: supervisors match on it, never on the message)
    reason = "error"

    def __init__(self, message, record=None, of=None, reason=None):
        super().__init__(message)
        self.message = message
        self.record = record
        self.of = of
        if reason is not None:
            self.reason = reason

    def __str__(self):
        if self.record is None:
            return self.message
        rec = self.record
        return "record %d/%d (%s %s): %s" % (rec.index + 1, self.of, rec.op_name, rec.dst, self.message)


class UsageError(OtaError):
    """The command line is wrong (missing or conflicting options)."""

    exit_code = 2
    reason = "usage"


class InputError(OtaError):
    """An input file or value cannot be packed (too large, unreadable, unsupported)."""

    exit_code = 2
    reason = "input"


class PackageError(OtaError):
    """A package is malformed, truncated, or fails a checksum: rejected as a whole."""

    exit_code = 3
    reason = "rejected"


class InstallError(OtaError):
    """An update failed after writing began."""

    exit_code = 1
    reason = "failed"


class Interrupted(InstallError):
    """The installer was told to stop (SIGTERM, SIGHUP): what it had started is cleaned up
    and the end script runs with OTA_STATUS=-1."""

    reason = "interrupted"
