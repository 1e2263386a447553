"""A/B slots with automatic fallback through a real u-boot (issue 24): SigmaStar's env protocol
(slot_select, slot_number, slot_metadata; bootcmd=bootab) asserted with the board's own
fw_printenv after every step; otaunpack from the board bundle installs into the inactive slot,
switches, marks good and reports a fallback."""

import pytest

from support import up


pytestmark = [pytest.mark.board_ab, pytest.mark.xdist_group("board_ab")]  # one qemu at a time: one worker

FACTORY = ("0", "2", "0x8f,0x00")  # slot A booted successfully, priority 15; slot B empty


def test_install_into_b_switch_mark_good_and_stay(ab_board):
    b = ab_board
    boot = b.power_on()
    up(boot, "A", "v1")
    assert [p[0] for p in boot.picks] == ["A"]
    assert b.env() == FACTORY
    a_before = b.mtd_sha(4)

    r = b.install("v2")
    assert r.rc == 0, r.err
    assert b.mtd_sha(4) == a_before  # the running slot: byte-identical
    assert b.slot_holds("B", "v2")
    assert b.env() == ("1", "2", "0x8e,0x3f")  # B on trial: priority 15, 3 tries, not successful
    st = b.status()
    assert st["booted"] == "A" and st["slots"]["B"]["state"] == "trial" and st["slots"]["B"]["version"] == "v2"
    assert st["last_install"]["result"] == "ok" and st["last_install"]["slot"] == "B" and st["fallback"] is None

    boot = b.reboot()
    up(boot, "B", "v2")
    assert boot.picks == [("B", "1", "0x8e,0x2f")]  # bootab paid one try before booting B
    assert b.env() == ("1", "2", "0x8e,0x2f")
    assert b.status()["slots"]["B"]["state"] == "trial"

    r = b.otaunpack("--mark-good")
    assert r.rc == 0 and r.out.strip() == "slot B marked good", r.err
    assert b.env() == ("1", "2", "0x8e,0xaf")
    assert b.otaunpack("--mark-good").out.strip() == "slot B was marked good already"
    for _ in range(2):
        boot = b.reboot()
        up(boot, "B", "v2")
        assert b.env() == ("1", "2", "0x8e,0xaf")  # a good slot costs no env write at boot
    st = b.status()
    assert st["booted"] == "B" and st["slots"]["B"]["state"] == "good" and st["slots"]["A"]["state"] == "good"
    assert st["fallback"] is None
    assert b.mtd_sha(4) == a_before


def test_never_marked_good_falls_back_then_the_abandoned_slot_is_reinstalled(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1")
    assert b.install("v3").rc == 0
    assert b.env() == ("1", "2", "0x8e,0x3f")
    for left in ("0x2f", "0x1f", "0x0f"):  # three tries, never marked good (the watchdog reboots it)
        boot = b.reboot()
        up(boot, "B", "v3")
        assert b.env() == ("1", "2", "0x8e," + left)
    boot = b.reboot()
    up(boot, "A", "v1")
    assert boot.fallbacks == [("B", "A")]
    assert b.env() == ("0", "2", "0x8e,0x0f")
    st = b.status()
    assert st["booted"] == "A" and st["slots"]["B"]["state"] == "failed"
    assert st["fallback"]["message"] == "fallback: slot B failed, running A"
    assert "fallback: slot B failed, running A" in b.otaunpack("--status").out

    # a 0.4 package names slot A's partition: the slot table maps it to the abandoned slot B
    a_before = b.mtd_sha(4)
    r = b.install("v2", "0.4")
    assert r.rc == 0, r.err
    assert b.mtd_sha(4) == a_before and b.slot_holds("B", "v2")
    assert b.env() == ("1", "2", "0x8e,0x3f")
    assert b.status()["fallback"] is None
    boot = b.reboot()
    up(boot, "B", "v2")
    assert b.otaunpack("--mark-good").rc == 0
    assert b.env() == ("1", "2", "0x8e,0xaf")


def test_a_panicking_slot_falls_back(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1")
    b.run("sed -i 's/^tries = .*/tries = 1/' /etc/sstarota/slots.conf").check()  # tried once
    assert b.install("panic").rc == 0
    assert b.env() == ("1", "2", "0x8e,0x1f")
    boot = b.reboot()
    assert [p[0] for p in boot.picks] == ["B", "A"] and boot.panics == 1, boot
    up(boot, "A", "v1")
    assert boot.fallbacks == [("B", "A")]
    assert b.env() == ("0", "2", "0x8e,0x0f")
    assert b.status()["fallback"]["message"] == "fallback: slot B failed, running A"


def test_a_corrupt_slot_falls_back(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1")
    assert b.install("corrupt").rc == 0  # the package is sound; the image in it is not
    assert b.env() == ("1", "2", "0x8e,0x3f")
    boot = b.reboot()
    assert [p[0] for p in boot.picks] == ["B", "A"] and boot.failed == ["B"], boot  # the FIT's sha256 failed
    up(boot, "A", "v1")
    assert b.env() == ("0", "2", "0x8e,0x0f")
    st = b.status()
    assert st["slots"]["B"]["state"] == "failed" and st["fallback"]["message"] == "fallback: slot B failed, running A"
