"""The host tests' kit, imported as `support` (tests/ is on sys.path: rootdir conftest).

One definition of each thing more than one test file needs:

- run:      PROJECT, GOLDEN, the in-process Cli, otapack/otaunpack in a subprocess (with its JSON
            progress events: otaunpack_events), goldens replayed
- files:    trees made from {path: bytes}, read back, and snapshot() of everything under a root
- records:  0.4 and 1.6 packages byte by byte from docs/FORMAT.md (independently of sstarota's packer)
- results:  the installer's one error line, its summary line, its JSON progress events
- hooks:    an install whose progress hook runs test code at an exact moment; peak RSS of an install
- screen:   the progress screen's test pictures and bar measurements
- board:    what the board rigs' tests share on the host side
"""

from support.board import ARM_OTAUNPACK, ARM_TMP, block_package, mtd_summary, nand_sha, sha, up
from support.files import files_of, made, snapshot, tree
from support.hooks import peak_rss_kib, run_hooked
from support.records import (BEGIN, MARKER, OP_ADD, OP_BLOCK, OP_DELETE, OP_DIFF, OP_SCRIPT, OP_UBI, OP_UPDATE,
                             TOOL_ID, byte_sum, pkg04, pkg16, rec04, rec16)
from support.results import SUMMARY, events_of, final_event, one_line, summary
from support.screen import QUADRANTS, bar_fraction, bar_state, close, quadrant_picture
from support.run import (BIN, GOLDEN, PROJECT, VENDOR_TOOL_ID, Cli, copy_inputs, golden_commands,
                         create, have, otapack, otaunpack, otaunpack_events, replay, run)

__all__ = ['ARM_OTAUNPACK', 'ARM_TMP', 'block_package', 'mtd_summary', 'nand_sha', 'sha', 'up', 'files_of', 'made',
           'snapshot', 'tree', 'peak_rss_kib', 'run_hooked', 'BEGIN', 'MARKER', 'OP_ADD', 'OP_BLOCK', 'OP_DELETE',
           'OP_DIFF', 'OP_SCRIPT', 'OP_UBI', 'OP_UPDATE', 'TOOL_ID', 'byte_sum', 'pkg04', 'pkg16', 'rec04', 'rec16',
           'SUMMARY', 'events_of', 'final_event', 'one_line', 'summary', 'QUADRANTS', 'bar_fraction', 'bar_state',
           'close', 'quadrant_picture', 'BIN', 'GOLDEN', 'PROJECT', 'VENDOR_TOOL_ID', 'Cli', 'copy_inputs',
           'golden_commands', 'create', 'have', 'otapack', 'otaunpack', 'otaunpack_events', 'replay', 'run']
