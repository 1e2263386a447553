"""The packer: what otapack and otabinheader do, one module per concern.

  data.py        record data (files, bytes)
  records.py     what goes into one record: RecordSpec, its checks, single-file specs
  trees.py       tree comparison and --dir-update records (deltas in parallel)
  operations.py  the otapack operation flags -> records
  build.py       laying records down: create, build, append (crash-safe)
  sign.py        --sign: the manifest rewritten from the package's bytes, signed
  legacy.py      legacy single-header packages (otabinheader)
  compress.py    --gzip

The byte rules (layouts, checksums) are schema's; reading packages is package.py's.
"""

from .build import DEFAULT_TOOL_ID, append, build, create, read_existing  # noqa: F401
from .compress import gzip_package  # noqa: F401
from .data import BytesData, FileData, RecordData  # noqa: F401
from .legacy import legacy_append, legacy_create  # noqa: F401
from .operations import OPERATIONS, operation_specs, parse_masks  # noqa: F401  (OPERATIONS: opflags')
from .sign import sign  # noqa: F401
from .records import DEFAULT_THRESHOLD, RecordSpec, add_spec, delete_spec, delta_spec, validate  # noqa: F401
from .trees import TreeChanges, compare_trees, dir_specs, make_patches  # noqa: F401
