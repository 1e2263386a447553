"""The qemu board, booted once per test session (see scripts/boardvm.py)."""

import shutil
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))

import boardvm  # noqa: E402

#: where the work share appears in the guest
W = "/mnt/work"


class Board:
    """A booted board plus a host folder that the guest sees as /mnt/work."""

    def __init__(self, vm, work):
        self.vm = vm
        self.work = work

    def run(self, cmd, **kw):
        return self.vm.run(cmd, **kw)

    def sh(self, cmd, **kw):
        """Run and require success; returns stdout."""
        return self.vm.run(cmd, **kw).check().out

    def otaunpack(self, *args):
        return self.vm.run("python3 -m sstarota.cli.otaunpack " + " ".join(str(a) for a in args))

    def path(self, host_path):
        """The guest path of a file under the work folder."""
        return "%s/%s" % (W, Path(host_path).relative_to(self.work))

    def fresh(self, name):
        """An empty folder under the work share, on the host."""
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    rig = boardvm.setup(log=lambda msg: sys.stderr.write(msg + "\n"))
    work = tmp_path_factory.mktemp("board")
    vm = boardvm.BoardVM(rig, work)
    vm.start()
    try:
        vm.run(boardvm.BOARD_SETUP).check()
        yield Board(vm, work)
    finally:
        vm.stop()
