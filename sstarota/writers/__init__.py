"""One writer per record kind, behind a registry keyed by op code.

A writer is opened for one (record, target), receives the record's verified data in
order (write), and is then committed or aborted. A new record kind is a new module that
registers itself; the installer's loop does not change.
"""

from .base import WRITERS, Context, Writer, for_op  # noqa: F401
from . import block, delta, files, script, ubi  # noqa: F401,E402  (registration)
