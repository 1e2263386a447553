"""The A/B slot table and SigmaStar's slot_metadata bytes (sstarota/slots.py), on the host.
The board side (u-boot, fw_setenv, the flash) is tests/board_ab."""

import pytest

from sstarota import slots
from sstarota.errors import UsageError

TABLE = """
# the board's slots
slot A = /dev/mtd4
slot B = /dev/mtd5
booted = slot_select
env_config = /etc/fw_env.config
tries = 3
"""


def test_table_parsed():
    t = slots.parse_table(TABLE)
    assert t.names == ["A", "B"]
    assert t.targets == {"A": ["/dev/mtd4"], "B": ["/dev/mtd5"]}
    assert (t.booted, t.env_config, t.tries, t.env_script) == ("slot_select", "/etc/fw_env.config", 3, "name=value")
    assert (t.fw_printenv, t.fw_setenv) == ("fw_printenv", "fw_setenv")
    assert t.slot_of("/dev/mtd5") == (1, 0) and t.slot_of("/dev/mtd6") is None


def test_table_with_several_targets_and_the_cmdline():
    t = slots.parse_table("slot A = /dev/mtd4 /dev/ubi0_1\nslot B = /dev/mtd5 /dev/ubi0_2\n"
                          "booted = cmdline   sstarota.slot\nenv_script = name value\n")
    assert t.slot_of("/dev/ubi0_2") == (1, 1)
    assert t.booted == "cmdline sstarota.slot" and t.env_script == "name value" and t.env_config is None


@pytest.mark.parametrize("text, words", [
    ("slot A = /dev/mtd4\n", "two slots"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\nslot C = /dev/mtd6\n", "two slots"),
    ("slot A = /dev/mtd4\nslot A = /dev/mtd5\n", "named twice"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd4\n", "slot A's already"),
    ("slot A = mtd4\nslot B = /dev/mtd5\n", "absolute"),
    ("slot A = /dev/mtd4 /dev/mtd6\nslot B = /dev/mtd5\n", "as many targets"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\ntries = 8\n", "1 to 7"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\ntries = x\n", "1 to 7"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\nbooted = guess\n", "slot_select or cmdline"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\nenv_script = yaml\n", "name=value"),
    ("slot A = /dev/mtd4\nslot B = /dev/mtd5\ncolour = blue\n", "line 3: not a setting"),
    ("slot A /dev/mtd4\n", "line 1: not a setting"),
])
def test_bad_tables_are_one_clear_usage_error(text, words):
    with pytest.raises(UsageError) as exc:
        slots.parse_table(text, "slots.conf")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_no_table_is_a_single_copy_board(tmp_path):
    assert slots.load_table(str(tmp_path / "absent.conf")) is None
    (tmp_path / "slots.conf").write_text(TABLE)
    assert slots.load_table(str(tmp_path / "slots.conf")).names == ["A", "B"]


def test_metadata_byte_fields():
    b = 0x8f
    assert (slots.successful(b), slots.tries_of(b), slots.priority_of(b)) == (True, 0, 15)
    b = 0x3f
    assert (slots.successful(b), slots.tries_of(b), slots.priority_of(b)) == (False, 3, 15)
    assert slots.make_byte(15, 3, False) == 0x3f
    assert slots.make_byte(14, 7, True) == 0xfe
    with pytest.raises(ValueError):
        slots.make_byte(16, 0, False)
    with pytest.raises(ValueError):
        slots.make_byte(1, 8, False)


@pytest.mark.parametrize("byte, state, bootable", [
    (0x00, "empty", False), (0x8f, "good", True), (0x3f, "trial", True), (0x0f, "failed", False),
    (0x8e, "good", True), (0x80, "empty", False), (0x1f, "trial", True),
])
def test_states(byte, state, bootable):
    assert slots.state_of(byte) == state and slots.bootable(byte) is bootable


def test_metadata_text():
    assert slots.parse_metadata("0x8f,0x00", 2) == [0x8f, 0]
    assert slots.parse_metadata("0x8F, 0x3f", 2) == [0x8f, 0x3f]
    assert slots.parse_metadata("0xf", 2) == [0x0f, 0]
    assert slots.parse_metadata("", 2) == [0, 0] and slots.parse_metadata(None, 2) == [0, 0]
    assert slots.format_metadata([0x8f, 0x3f]) == "0x8f,0x3f"
    assert slots.format_metadata([0x0f, 0]) == "0x0f,0x00"
    for bad in ("0x8f,0x00,0x00", "0x100,0x00", "zz,0x00", "0x8f;0x00"):
        with pytest.raises(ValueError):
            slots.parse_metadata(bad, 2)


def test_switch_and_mark_good_arithmetic():
    # factory: A good at the top priority, B empty; an install into B puts it on trial above A
    meta = slots.switched([0x8f, 0x00], 1, 3)
    assert meta == [0x8e, 0x3f] and slots.format_metadata(meta) == "0x8e,0x3f"
    # u-boot's bootab pays one try per boot of a slot not yet successful (0x3f -> 0x2f); marked good:
    assert slots.marked_good([0x8e, 0x2f], 1) == [0x8e, 0xaf]
    # the next install goes back into A: B steps down, A on trial
    assert slots.switched([0x8e, 0xaf], 0, 3) == [0x3f, 0xae]
    # B out of tries: failed, A (good) still bootable: what u-boot falls back to
    assert [slots.state_of(b) for b in (0x8e, 0x0f)] == ["good", "failed"]
    # an abandoned slot gets a new package: on trial again
    assert slots.switched([0x8e, 0x0f], 1, 2) == [0x8e, 0x2f]


class FakeEnv:
    """The env as a dict (the real fw_setenv runs on the A/B board, tests/board_ab)."""

    def __init__(self, **values):
        self.values = dict(values)

    def get(self, *names):
        return {n: self.values[n] for n in names if n in self.values}

    def set(self, values):
        self.values.update(values)


def slots_with(tmp_path, **env):
    return slots.Slots(slots.parse_table(TABLE), str(tmp_path / "state"), env=FakeEnv(**env))


def test_target_selection(tmp_path):
    b = slots_with(tmp_path, slot_select="0", slot_number="2", slot_metadata="0x8f,0x00")
    # 1.6, both slots' targets, default mask "1 0": the inactive slot's, whatever the masks
    assert b.select(0, "block", [("/dev/mtd4", 1), ("/dev/mtd5", 0)], False) == [("/dev/mtd4", False),
                                                                                  ("/dev/mtd5", True)]
    assert b.select(0, "block", [("/dev/mtd4", 1), ("/dev/mtd5", 1)], True) == [("/dev/mtd4", False),
                                                                                 ("/dev/mtd5", True)]
    # 0.3/0.4: one target, mapped to the inactive slot's
    assert b.select(0, "block", [("/dev/mtd4", 1)], False) == [("/dev/mtd5", True)]
    assert b.select(0, "block", [("/dev/mtd5", 1)], False) == [("/dev/mtd5", True)]
    # other targets keep their masks
    assert b.select(0, "file", [("/etc/app.conf", 1)], False) == [("/etc/app.conf", True)]
    # the running slot's partition under another name is refused
    from sstarota.errors import PackageError

    with pytest.raises(PackageError) as exc:
        b.select(2, "block", [("/dev/mtdblock4", 1)], False)
    assert "record 3" in str(exc.value) and "running slot" in str(exc.value)
    b2 = slots_with(tmp_path, slot_select="1", slot_number="2", slot_metadata="0x8e,0xaf")
    assert b2.select(0, "block", [("/dev/mtd4", 1), ("/dev/mtd5", 0)], False) == [("/dev/mtd4", True),
                                                                                   ("/dev/mtd5", False)]


def test_booted_slot_must_be_known(tmp_path):
    with pytest.raises(UsageError):
        slots_with(tmp_path, slot_select="7").booted()
    with pytest.raises(UsageError):
        slots_with(tmp_path).booted()
    t = slots.parse_table(TABLE.replace("booted = slot_select", "booted = cmdline sstarota.slot"))
    (tmp_path / "cmdline").write_text("console=ttyAMA0 sstarota.slot=B quiet\n")
    assert slots.Slots(t, None, env=FakeEnv(), cmdline=str(tmp_path / "cmdline")).booted() == 1
    (tmp_path / "cmdline").write_text("console=ttyAMA0\n")
    with pytest.raises(UsageError):
        slots.Slots(t, None, env=FakeEnv(), cmdline=str(tmp_path / "cmdline")).booted()


def test_switch_mark_good_status_and_fallback(tmp_path):
    img = tmp_path / "dev/mtd5"
    img.parent.mkdir()
    img.write_bytes(b"new kernel" + b"\xff" * 100)
    import hashlib

    b = slots_with(tmp_path, slot_select="0", slot_number="2", slot_metadata="0x8f,0x00")
    b.expected("/dev/mtd5", 10, hashlib.sha256(b"new kernel").hexdigest())
    assert b.switch("ab" * 32, "2.0", root=str(tmp_path)) == "B"
    assert b.env.values["slot_select"] == "1" and b.env.values["slot_metadata"] == "0x8e,0x3f"
    # until the reboot the running slot is still A, whatever slot_select says now
    assert b.status()["booted"] == "A" and slots_with(tmp_path, **b.env.values).booted() == 0
    # B boots (a new boot id): bootab paid a try; not yet good
    import json

    path = tmp_path / "state" / "slots.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), switch_boot_id="the boot before")))
    env = dict(b.env.values, slot_metadata="0x8e,0x2f")
    b = slots_with(tmp_path, **env)
    st = b.status()
    assert st["booted"] == "B" and st["slots"]["B"]["state"] == "trial" and st["slots"]["B"]["version"] == "2.0"
    assert st["last_install"]["result"] == "ok" and st["fallback"] is None
    assert b.mark_good() == ("B", True) and b.env.values["slot_metadata"] == "0x8e,0xaf"
    assert b.mark_good() == ("B", False)
    # a B that never marks good runs out of tries: u-boot falls back to A
    b = slots_with(tmp_path, slot_select="0", slot_number="2", slot_metadata="0x8e,0x0f")
    st = b.status()
    assert st["fallback"]["message"] == "fallback: slot B failed, running A"
    assert "fallback: slot B failed, running A" in slots.status_lines(st)


def test_read_back_mismatch_leaves_the_env(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/mtd5").write_bytes(b"half written")
    b = slots_with(tmp_path, slot_select="0", slot_number="2", slot_metadata="0x8f,0x00")
    b.expected("/dev/mtd5", 12, "00" * 32)
    from sstarota.errors import InstallError

    with pytest.raises(InstallError) as exc:
        b.switch("ab" * 32, None, root=str(tmp_path))
    assert "not switched" in str(exc.value)
    assert b.env.values["slot_select"] == "0" and b.env.values["slot_metadata"] == "0x8f,0x00"


@pytest.mark.parametrize("select, meta, refused", [
    ("1", "0x8e,0x2f", True),   # B running on trial (not marked good), A the good fallback: refused
    ("1", "0x8e,0xaf", False),  # B marked good: A may be written
    ("0", "0x8f,0x00", False),  # factory A good, B empty
    ("0", "0x0f,0x00", False),  # A never marked good, but B holds nothing to fall back to
    ("0", "0x8e,0x0f", False),  # after a fallback to A: B failed, out of tries
    ("0", "0x0e,0x2f", True),   # A on trial, B bootable
    ("1", "0x8e,0x0f", True),   # B on its last try (bootab took it before booting): still not good
])
def test_an_install_never_overwrites_the_slot_a_trial_falls_back_to(tmp_path, select, meta, refused):
    """A package found (or run again) before the running slot is marked good would write the
    other slot, the one u-boot falls back to: refused, nothing written, until --mark-good."""
    from sstarota.errors import PackageError

    b = slots_with(tmp_path, slot_select=select, slot_number="2", slot_metadata=meta)
    waits = [line for line in slots.status_lines(b.status()) if line.startswith("install waits: ")]
    if not refused:
        b.keep_fallback()
        assert waits == [] and b.status()["install_waits"] is None
        return
    with pytest.raises(PackageError) as exc:
        b.keep_fallback()
    assert exc.value.reason == "slot-trial" and exc.value.exit_code == 3 and "\n" not in str(exc.value)
    assert len(waits) == 1  # what the boot wrapper reads to leave a package untried


def test_after_a_switch_in_this_boot_the_new_slot_may_be_written_again_and_mark_good_keeps_the_switch(tmp_path):
    """A factory A never marked good (0x3f): the install into B switches; in the same boot a
    second run may write B again (A still runs and stays the fallback), and --mark-good marks
    A without turning slot_select back to it (the next boot must try B)."""
    import hashlib

    img = tmp_path / "dev/mtd5"
    img.parent.mkdir()
    img.write_bytes(b"new kernel")
    b = slots_with(tmp_path, slot_select="0", slot_number="2", slot_metadata="0x3f,0x00")
    b.keep_fallback()
    b.expected("/dev/mtd5", 10, hashlib.sha256(b"new kernel").hexdigest())
    assert b.switch("ab" * 32, "2.0", root=str(tmp_path)) == "B"
    assert b.env.values["slot_select"] == "1" and b.env.values["slot_metadata"] == "0x3e,0x3f"
    again = slots_with(tmp_path, **b.env.values)
    again.keep_fallback()  # B is the slot just written, not a fallback
    assert again.mark_good() == ("A", True)
    assert again.env.values["slot_select"] == "1" and again.env.values["slot_metadata"] == "0xbe,0x3f"
