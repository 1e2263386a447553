"""The boot wrapper (board/sstarota-update) on the A/B board, as a camera runs it at every boot:
the package on the data partition is installed into the other slot once, however many boots
find it there; a package that fails is tried at most OTA_MAX_TRIES times, then left, and the
wrapper's --status says so and why. Real boots through u-boot between the runs."""

import json
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.board_ab, pytest.mark.xdist_group("board_ab")]  # one qemu at a time: one worker

WRAPPER = Path(__file__).resolve().parents[2] / "board" / "sstarota-update"
PKG = "/data/SStarOta.bin.gz"
REBOOT_ASKED = "/data/reboot-asked"


def configure(b):
    """/etc/sstarota-update.conf (the initramfs's /etc: written again at every boot); the
    wrapper's state on the data partition, which boots keep."""
    conf = ("OTA_PACKAGES=%s\nOTA_STATE_DIR=/data/sstarota\nOTA_WORKDIR=%s/ota\nOTA_MAX_TRIES=2\nOTA_SYSLOG=no\n"
            "OTAUNPACK=%s\nOTA_REBOOT='touch %s'\n" % (PKG, b.TMP, b.OTAUNPACK, REBOOT_ASKED))
    b.run("mkdir -p %s && printf \"%s\" > /etc/sstarota-update.conf" % (b.TMP, conf)).check()


def wrapper(b):
    """One boot's run of the wrapper: (exit code, whether it asked for a reboot), its output."""
    r = b.run("rm -f %s; sh %s/sstarota-update" % (REBOOT_ASKED, b.W), timeout=900)
    asked = b.run("test -e %s" % REBOOT_ASKED).rc == 0
    return (r.rc, asked), r


def status(b):
    """The wrapper's --status: [sha256, kind, line] a package."""
    r = b.run("sh %s/sstarota-update --status" % b.W).check()
    return [[line.split()[0], line.split()[1].rstrip(":"), line] for line in r.out.splitlines()]


def test_the_wrapper_installs_a_package_once_over_three_boots_and_leaves_a_failing_one(ab_board):
    b = ab_board
    shutil.copy(WRAPPER, b.vm.work / "sstarota-update")
    b.power_on()
    configure(b)
    b.run("cp %s/pkgs/%s %s && sync" % (b.W, b.pkgs[("v2", "1.6")].name, PKG)).check()
    assert [s[1] for s in status(b)] == ["package"]  # "no package recorded in ..."

    # boot 1 (slot A): installed into B, switched, a reboot asked for
    got, r = wrapper(b)
    assert got == (0, True), r.out + r.err
    assert b.env() == ("1", "2", "0x8e,0x3f") and b.slot_holds("B", "v2")
    (digest, kind, _), = status(b)
    assert kind == "installed"

    # boots 2 and 3 (slot B, on trial then marked good by the application): the same package
    # found again is not installed again, nothing is written, no reboot is asked for
    for n in (2, 3):
        boot = b.reboot()
        assert (boot.slot, boot.release) == ("B", "v2")
        configure(b)
        env = b.env()
        got, r = wrapper(b)
        assert got == (0, False), r.out + r.err
        assert b.env() == env  # no env write: the wrapper did not install
        if n == 2:
            assert b.otaunpack("--mark-good").rc == 0
    assert [s[:2] for s in status(b)] == [[digest, "installed"]]

    # a damaged package (its gzip stream cut): rejected at each try, left after the second,
    # and the third run does not try it; the slots and the env are untouched
    b.run("head -c 100000 %s/pkgs/%s > %s && sync" % (b.W, b.pkgs[("v3", "1.6")].name, PKG)).check()
    env = b.env()
    codes = [wrapper(b)[0] for _ in range(3)]
    assert codes == [(3, False), (3, False), (5, False)], codes
    assert b.env() == env and b.slot_holds("B", "v2")
    lines = {s[1]: s[2] for s in status(b)}
    assert set(lines) == {"installed", "left"}
    assert "left after 2 tries" in lines["left"] and "exit 3" in lines["left"], lines


def test_a_package_waits_while_the_running_slot_is_on_trial(ab_board):
    """B on trial (installed, booted, not marked good yet) and A the good slot it falls back to:
    otaunpack refuses to write A (exit 3, reason slot-trial, nothing written), the wrapper
    leaves the package untried; once B is marked good the same package installs into A."""
    b = ab_board
    shutil.copy(WRAPPER, b.vm.work / "sstarota-update")
    b.power_on()
    assert b.install("v2").rc == 0
    boot = b.reboot()
    assert (boot.slot, boot.release) == ("B", "v2")
    configure(b)
    env, a_before = b.env(), b.mtd_sha(4)
    assert env == ("1", "2", "0x8e,0x2f")  # B on trial: one try paid

    r = b.otaunpack("-x", "%s/pkgs/%s" % (b.W, b.pkgs[("v3", "1.6")].name), "-t", b.TMP, "-q",
                    "--progress-fd", "1")
    assert r.rc == 3, r.err
    final = json.loads(r.out.splitlines()[-1])
    assert final["reason"] == "slot-trial" and final["code"] == 3
    assert b.env() == env and b.mtd_sha(4) == a_before

    b.run("cp %s/pkgs/%s %s && sync" % (b.W, b.pkgs[("v3", "1.6")].name, PKG)).check()
    got, r = wrapper(b)
    assert got == (0, False), r.out + r.err
    assert b.env() == env and b.mtd_sha(4) == a_before
    assert [s[1] for s in status(b)] == ["package"]  # no try recorded

    assert b.otaunpack("--mark-good").rc == 0
    got, r = wrapper(b)
    assert got == (0, True), r.out + r.err
    assert b.slot_holds("A", "v3") and b.env() == ("0", "2", "0x3f,0xae")
