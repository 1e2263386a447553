"""The vendor goldens installed onto real kernel devices in the qemu board: the board's
partitions match the goldens' targets (mtd0..mtd4 on NAND, ubi0_1 a static volume)."""

from pathlib import Path

import pytest

from support import nand_sha, sha

pytestmark = [pytest.mark.board, pytest.mark.xdist_group("board")]  # one booted board: one worker

GOLDEN_GUEST = "/mnt/proj/tests/golden"
GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def guest_sha(board, cmd):
    return board.sh(cmd + " | sha256sum").split()[0]


def tree_shas(board, root):
    out = board.sh("cd %s && find . -type f | sort | xargs -r sha256sum" % root)
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines()}


def host_tree(root):
    return {str(p.relative_to(root)): sha(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def reset_dirs(board):
    board.sh("rm -rf /config /customer /tmp/fw_setenv.log && mkdir -p /config /customer")


GOLDENS = [("v0.4", n) for n in ("p1", "p2", "p3", "p4")] + [("v1.6", n) for n in ("p1", "p2", "p3", "p4", "p5")]


@pytest.mark.parametrize("version,name", GOLDENS)
def test_golden_installs_on_real_devices(board, version, name):
    inp = GOLDEN / version / "in"
    g = "%s/%s" % (GOLDEN_GUEST, version)
    reset_dirs(board)
    kernel = (inp / "images/kernel").read_bytes()
    if name == "p1":
        board.sh("echo old > /config/obsolete.txt")
    if name == "p3":
        board.sh("cp -r %s/in/old/. /config/" % g)
    if name == "p4":
        board.sh("cp -r %s/in/old/. /customer/" % g)
        if version == "v1.6":  # the raw partition delta patches what mtd4 holds
            board.sh("flash_erase -q /dev/mtd4 0 0 && nandwrite -q -p /dev/mtd4 %s/in/images/kernel.old" % g)
    if name == "p5":
        board.sh("flash_erase -q /dev/mtd4 0 0 && flash_erase -q /dev/mtd3 0 0")
    # the vendor's deltas carry no hashes: the board keeps its ledger of them where a reboot
    # does not lose it (the work share here; /tmp is RAM, and such a package is refused there)
    board.sh("rm -rf /mnt/work/state && mkdir -m 700 /mnt/work/state")
    r = board.otaunpack("-x", "%s/%s.bin.gz" % (g, name), "-t", "/tmp", "--state-dir", "/mnt/work/state")
    assert r.rc == 0, r.err
    if name in ("p1", "p4", "p5"):
        assert "end status=0" in r.out
    if name == "p1":
        assert nand_sha(board, 4, len(kernel)) == sha(kernel)
        ubi = (inp / "images/customer.ubifs").read_bytes()
        assert board.sh("cat /sys/class/ubi/ubi0_1/data_bytes").strip() == str(len(ubi))  # static: exact size
        assert guest_sha(board, "cat /dev/ubi0_1") == sha(ubi)
        assert tree_shas(board, "/config") == {"app.conf": sha((inp / "files/app.conf").read_bytes()),
                                               "app2.conf": sha((inp / "files/app.conf").read_bytes())}
        assert board.sh("stat -c %a /config/app.conf /config/app2.conf").split() == ["644", "1204"]
        assert guest_sha(board, "cat /customer/bin/new.bin") == sha((inp / "files/new.bin").read_bytes())
        assert board.sh("cat /tmp/fw_setenv.log") == "kernel_file_size 0x18bb9\n"
    elif name == "p2":
        ipl = (inp / "images/ipl_s.bin").read_bytes()
        assert nand_sha(board, 0, len(ipl)) == sha(ipl)
    elif name == "p3":
        assert tree_shas(board, "/config") == host_tree(inp / "new")
    elif name == "p4":
        assert tree_shas(board, "/customer") == host_tree(inp / "new")
        if version == "v1.6":
            assert nand_sha(board, 4, len(kernel)) == sha(kernel)
    elif name == "p5":
        assert nand_sha(board, 3, len(kernel)) == sha(kernel)
        assert guest_sha(board, "head -c %d /dev/mtd4" % len(kernel)) == sha(b"\xff" * len(kernel))  # mask 0
