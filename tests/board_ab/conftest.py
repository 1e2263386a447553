"""The A/B board (scripts/boardvm_ab.py): the armhf board booted through a real u-boot with
SigmaStar's A/B env on NOR flash; otaunpack runs there from the board bundle. Every test
starts from the factory flash (slot A = v1, B erased) and boots it; one qemu at a time."""

import json
import sys
from pathlib import Path

import pytest

import boardvm_ab
from sstarota import bundle
from support import otapack

PROJECT = Path(__file__).resolve().parent.parent.parent

W = "/mnt/work"
OTAUNPACK = W + "/bundle/otaunpack"
TMP = "/data/tmp"
BIN = Path(sys.executable).parent
PROTOCOL = ("slot_select", "slot_number", "slot_metadata")


def make_package(d, name, image, fmt="1.6"):
    """A package of one slot image: 1.6 with both slots' targets (`-d "/dev/mtd4 /dev/mtd5"`,
    the vendor's default mask "1 0"), or 0.4 naming slot A's partition only."""
    pkg = d / ("%s-%s.bin" % (name, fmt))
    otapack("-c", pkg, "--format", fmt, "--manifest", "--fw-version", name)
    if fmt == "1.6":
        otapack("-a", pkg, "-s", image, "-d", "/dev/mtd4 /dev/mtd5", "--default-mask", "1 0", "-t", "0x1000000",
                "-l", "kernel", "--block-update")
    else:
        otapack("-a", pkg, "-s", image, "-d", "/dev/mtd4", "-t", "0x1000000", "--block-update")
    otapack("--gzip", pkg)
    return Path(str(pkg) + ".gz")


class ABBoard:
    """The booted A/B board, the images and packages, and what each step asserts on."""

    W, TMP, OTAUNPACK = W, TMP, OTAUNPACK  # the board's paths: the shared work directory, -t, the bundle

    def __init__(self, vm, rig, pkgs):
        self.vm = vm
        self.rig = rig
        self.pkgs = pkgs
        self.layout = vm.layout
        self.boots = []  # Boot objects (timings for scripts/bench)
        self.installs = []  # seconds of each install into a slot

    def image(self, name):
        return self.layout["images"][name]

    def power_on(self):
        boot = self.vm.start()
        self.boots.append(boot)
        return boot

    def reboot(self):
        boot = self.vm.reboot()
        self.boots.append(boot)
        return boot

    def run(self, cmd, **kw):
        return self.vm.run(cmd, **kw)

    def env(self):
        """fw_printenv slot_select slot_number slot_metadata, on the board."""
        env = self.vm.env(*PROTOCOL)
        return tuple(env.get(k) for k in PROTOCOL)

    def otaunpack(self, *args, timeout=900):
        return self.vm.run("%s %s" % (OTAUNPACK, " ".join(str(a) for a in args)), timeout=timeout)

    def install(self, name, fmt="1.6"):
        import time

        t0 = time.monotonic()
        r = self.otaunpack("-x", "%s/pkgs/%s" % (W, self.pkgs[(name, fmt)].name), "-t", TMP, "-q")
        self.installs.append(time.monotonic() - t0)
        return r

    def install_command(self, name, fmt="1.6"):
        return "%s -x %s/pkgs/%s -t %s -q" % (OTAUNPACK, W, self.pkgs[(name, fmt)].name, TMP)

    def status(self):
        r = self.otaunpack("--status", "--json").check()
        return json.loads(r.out)

    def mtd_sha(self, mtd, size=None):
        cmd = "head -c %d /dev/mtd%d | sha256sum" % (size, mtd) if size else "sha256sum /dev/mtd%d" % mtd
        return self.vm.run(cmd).check().out.split()[0]

    def slot_holds(self, slot, name):
        img = self.image(name)
        return self.mtd_sha(4 if slot == "A" else 5, img["size"]) == img["sha256"]


@pytest.fixture(scope="session")
def ab_rig(tmp_path_factory):
    rig = boardvm_ab.setup(log=lambda msg: sys.stderr.write(msg + "\n"))
    work = tmp_path_factory.mktemp("board-ab")
    (work / "bundle").mkdir()
    bundle.zipapp(str(work / "bundle" / "otaunpack"))
    pkgs = work / "pkgs"
    pkgs.mkdir()
    made = {}
    for name, fmt in (("v2", "1.6"), ("v3", "1.6"), ("panic", "1.6"), ("corrupt", "1.6"), ("v2", "0.4")):
        made[(name, fmt)] = make_package(pkgs, name, rig / "img" / ("slot-%s.itb" % name), fmt)
    for p in pkgs.glob("*.bin"):
        p.unlink()
    return rig, work, made


@pytest.fixture
def ab_board(ab_rig):
    """The factory flash, powered on: u-boot boots slot A (v1)."""
    rig, work, pkgs = ab_rig
    vm = boardvm_ab.ABBoardVM(rig, work)
    vm.factory()
    board = ABBoard(vm, rig, pkgs)
    try:
        yield board
    finally:
        vm.power_cut()


