"""The qemu board, booted once per test session (see scripts/boardvm.py). A test that needs a
VM of its own (the power cut: scripts/boardvm_disks.py) parks the shared board first, never
two VMs at once; the next test that asks for the board boots it again."""

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))

import boardvm  # noqa: E402
from support.board import park_after_group  # noqa: E402

class Board(boardvm.Workspace):
    """The x86 board: otaunpack from the project on the 9p share."""

    def otaunpack(self, *args):
        return self.vm.run("python3 -m sstarota.cli.otaunpack " + " ".join(str(a) for a in args))


class SharedBoard:
    """The session's board: booted (and its flash set up) when a test asks for it, stopped
    by park() while a test runs a VM of its own."""

    def __init__(self, work):
        self.work = work
        self.vm = None

    def get(self):
        if self.vm is None:
            rig = boardvm.setup(log=lambda msg: sys.stderr.write(msg + "\n"))
            vm = boardvm.BoardVM(rig, self.work)
            vm.start()
            try:
                vm.run(boardvm.BOARD_SETUP).check()
            except BaseException:
                vm.stop()
                raise
            self.vm = vm
        return Board(self.vm, self.work)

    def park(self):
        if self.vm is not None:
            self.vm.stop()
            self.vm = None


@pytest.fixture(scope="session")
def shared_board(tmp_path_factory):
    shared = SharedBoard(tmp_path_factory.mktemp("board"))
    park_after_group("board", shared.park)  # get() boots it again if a later test asks
    try:
        yield shared
    finally:
        shared.park()


@pytest.fixture
def board(shared_board):
    return shared_board.get()
