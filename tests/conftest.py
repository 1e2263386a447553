import os
import sys

import pytest

# scripts/ (the boards' rigs, the web server, the benchmark's image sets) for the tests that use them
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

from support import Cli

#: tests that share one booted board run on one xdist worker (scripts/test runs two): a board
#: directory's files share a session fixture, the runtime board is one module of its own
_BOARD_DIRS = ("board", "board_arm", "board_ab")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = os.path.relpath(str(item.fspath), os.path.dirname(__file__)).split(os.sep)
        if len(parts) > 1 and parts[0] in _BOARD_DIRS:
            group = parts[0] + ("-runtime" if parts[-1] == "test_arm_runtime.py" else "")
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def cli(capfd):
    return Cli(capfd)
