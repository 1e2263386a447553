"""Power cuts on the A/B board (issue 24): qemu killed at a chosen point of a real flash write
(its pflash trace read as it happens, scripts/boardvm_ab.TraceWatch), the flash and data disk
kept, the board powered on again. Each ends on a bootable slot with the right version, and the
env protocol (fw_printenv slot_select slot_number slot_metadata) says which."""

import pytest

from support import up

pytestmark = [pytest.mark.board_ab, pytest.mark.xdist_group("board_ab")]  # one qemu at a time: one worker

FACTORY = ("0", "2", "0x8f,0x00")


def cut_at(b, region, erases, flushes, command=None, reboot=False):
    """Arm the cut, run the command (or reboot), wait for qemu to die, and power on again."""
    b.vm.watch.arm(region, erases, flushes)
    if reboot:
        b.vm.reboot(wait=False)
    else:
        b.vm.submit_raw(command)
    assert b.vm.wait_dead(900), "the power cut never came"
    fired = b.vm.watch.fired
    b.vm.power_cut()
    assert fired and fired[0] == region, fired
    return b.power_on()


def test_cut_during_the_slot_write(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1", env_kept=True)
    boot = cut_at(b, "B", 12, 0, b.install_command("v2"))  # the 12th of slot B's 37 erase blocks
    up(boot, "A", "v1", env_kept=True)
    assert b.env() == FACTORY  # the switch comes only after the slot reads back right
    assert not b.slot_holds("B", "v2")
    r = b.install("v2")  # the same package again finishes the slot and switches
    assert r.rc == 0, r.err
    assert b.env() == ("1", "2", "0x8e,0x3f")
    up(b.reboot(), "B", "v2", env_kept=True)


def test_cut_during_the_env_switch(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1", env_kept=True)
    boot = cut_at(b, "env", 1, 1, b.install_command("v2"))  # fw_setenv: the other copy erased, one buffer written
    up(boot, "A", "v1", env_kept=True)  # that copy fails its CRC: u-boot keeps the old one
    assert b.env() == FACTORY
    assert b.slot_holds("B", "v2")
    r = b.install("v2")  # slot B is in place: read back, and the switch done now
    assert r.rc == 0, r.err
    assert b.env() == ("1", "2", "0x8e,0x3f")
    up(b.reboot(), "B", "v2", env_kept=True)


def test_cut_during_mark_good(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1", env_kept=True)
    assert b.install("v2").rc == 0
    up(b.reboot(), "B", "v2", env_kept=True)
    assert b.env() == ("1", "2", "0x8e,0x2f")
    boot = cut_at(b, "env", 1, 1, "/mnt/work/bundle/otaunpack --mark-good")
    up(boot, "B", "v2", env_kept=True)  # the old copy: B still on trial, and it pays another try
    assert b.env() == ("1", "2", "0x8e,0x1f")
    assert b.otaunpack("--mark-good").rc == 0
    assert b.env() == ("1", "2", "0x8e,0x9f")
    up(b.reboot(), "B", "v2", env_kept=True)


def test_cut_during_u_boots_env_save(ab_board):
    b = ab_board
    up(b.power_on(), "A", "v1", env_kept=True)
    assert b.install("v2").rc == 0
    assert b.env() == ("1", "2", "0x8e,0x3f")
    boot = cut_at(b, "env", 1, 32, reboot=True)  # bootab's saveenv of B's try, cut half-way
    assert [p[0] for p in boot.picks] == ["B"], boot
    up(boot, "B", "v2", env_kept=True)
    assert b.env() == ("1", "2", "0x8e,0x2f")  # the try paid again from the old copy
