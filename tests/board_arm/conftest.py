"""The armhf qemu board (Cortex-A7, 64 MB), booted once per test session; otaunpack runs
there from the board bundle (see scripts/boardvm_arm.py)."""

import re
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))

import boardvm  # noqa: E402
import boardvm_arm  # noqa: E402
from support.board import park_after_group  # noqa: E402

from sstarota import bundle  # noqa: E402

#: where the work share appears in the guest
W = "/mnt/work"
#: the bundle's otaunpack, as the board runs it (its #! line finds the board's python3)
OTAUNPACK = W + "/bundle/otaunpack"

class ArmBoard(boardvm.Workspace):
    """A booted armhf board plus a host folder that the guest sees as /mnt/work."""

    bundle = OTAUNPACK

    def __init__(self, vm, work):
        super().__init__(vm, work)
        self.emmc = vm.run("readlink /dev/emmc").check().out.strip()  # the virtio disk: /dev/vdX

    def otaunpack(self, *args):
        return self.vm.run("%s %s" % (OTAUNPACK, " ".join(str(a) for a in args)))

    def measured(self, *args):
        """otaunpack under busybox time: (Result, peak RSS in kB). Busybox 1.35 prints the
        kernel's ru_maxrss (already kB) times page size / 1024, that is 4x: undone here."""
        r = self.vm.run("time -f 'maxrss %%M' %s %s" % (OTAUNPACK, " ".join(str(a) for a in args)))
        m = re.findall(r"^maxrss (\d+)$", r.err, re.M)
        assert m, r.err
        return r, int(m[-1]) // 4


@pytest.fixture(scope="session")
def arm_board(tmp_path_factory):
    rig = boardvm_arm.setup(log=lambda msg: sys.stderr.write(msg + "\n"))
    work = tmp_path_factory.mktemp("board-arm")
    (work / "bundle").mkdir()
    bundle.zipapp(str(work / "bundle" / "otaunpack"))
    vm = boardvm_arm.ArmBoardVM(rig, work)
    vm.start()
    park_after_group("board_arm", vm.stop)
    try:
        vm.run(boardvm_arm.FLASH_SETUP).check()
        yield ArmBoard(vm, work)
    finally:
        vm.stop()
