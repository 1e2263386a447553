"""The installer: the pipeline (verify -> begin script -> apply -> end script), the plan
the verify pass makes, and the block digests that tie the two passes together.

Package sources (file, stdin) are in sources.py; the writers in writers/.
"""

from ..sources import FileSource, StreamSource, open_source  # noqa: F401
from .pipeline import Installer, Options  # noqa: F401
from .plan import Plan  # noqa: F401
from .targets import Dest  # noqa: F401
