import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# scripts/ (the boards' rigs, the web server, the benchmark's image sets) for the tests that use them
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

from support import Cli
from support.board import park

def _group(item):
    """The xdist group of a board test (its module's pytestmark): the tests that share one
    booted board run on one worker (scripts/test runs two)."""
    mark = item.get_closest_marker("xdist_group")
    return mark.args[0] if mark is not None else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """A group's booted board is stopped after the group's last test on this worker (a later
    test of the group, as in a run that interleaves, boots it again where its fixture can)."""
    group = _group(item)
    if group and (nextitem is None or _group(nextitem) != group):
        park(group)


@pytest.fixture
def cli(capfd):
    return Cli(capfd)


@pytest.fixture
def ram_dir():
    """A directory of the test's on a RAM filesystem (/dev/shm, a tmpfs): a board's /tmp."""
    d = tempfile.mkdtemp(prefix="sstarota-test-", dir="/dev/shm")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)
