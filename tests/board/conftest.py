"""The qemu board, booted once per test session (see scripts/boardvm.py)."""

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))

import boardvm  # noqa: E402

class Board(boardvm.Workspace):
    """The x86 board: otaunpack from the project on the 9p share."""

    def otaunpack(self, *args):
        return self.vm.run("python3 -m sstarota.cli.otaunpack " + " ".join(str(a) for a in args))


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
