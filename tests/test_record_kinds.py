"""Which target kinds each record kind accepts: the table of (op code, target kind) -> the
kind of target the installer's check makes of it ("file", "device", "absent", "none" for a
script record), or "refused". The writers own this (writers.for_op); the table is what the
installer accepted before it asked them, and must not change unless on purpose."""

import os
import re
import stat
import types

import pytest

from sstarota import flash, schema, writers
from sstarota.confine import Root, StaleCleaner
from sstarota.errors import PackageError
from sstarota.install.pipeline import Installer, Options
from sstarota.package import Record
from sstarota.writers import Context

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root (mknod)")

# target kind -> the target's name in the package
TARGETS = {
    "file": "/etc/app.conf",  # a regular file
    "absent": "/etc/missing.conf",  # no such file yet
    "staged image": "/dev/mtd4",  # a regular file under /dev (a partition image staged under --root)
    "mtd": "/dev/mtd3",  # an MTD character device
    "mtdblock": "/dev/mtdblock3",  # an MTD block device
    "ubi": "/dev/ubi0_1",  # a UBI volume
    "block device": "/dev/mmcblk0p3",  # a block device that is not MTD (eMMC)
    "script name": "upgrade.sh",  # what a script record names
}

B, U, FU, FA, FD, DIFF, S = (schema.OP_BLOCK, schema.OP_UBI, schema.OP_FILE_UPDATE, schema.OP_FILE_ADD,
                             schema.OP_FILE_DELETE, schema.OP_FILE_DIFF, schema.OP_SCRIPT)
R = "refused"
DEBUG = os.environ.get("KINDS_DEBUG")

# --root with --allow-devices: device nodes inside the root are written
WITH_DEVICES = {
    #             file    absent    staged image  mtd       mtdblock  ubi       block device  script name
    B: dict(zip(TARGETS, ("file", "absent", "file", "device", "device", R, "device", "file"))),
    U: dict(zip(TARGETS, ("file", "absent", "file", R, R, "device", R, "file"))),
    FU: dict(zip(TARGETS, ("file", "absent", "file", R, R, R, R, "file"))),
    FA: dict(zip(TARGETS, ("file", "absent", "file", R, R, R, R, "file"))),
    FD: dict(zip(TARGETS, ("file", "absent", "file", R, R, R, R, "file"))),
    DIFF: dict(zip(TARGETS, ("file", R, "file", "device", "device", R, "device", "file"))),
    S: dict(zip(TARGETS, ("none",) * len(TARGETS))),
}

# --root without --allow-devices: a device node in a staging root is refused
WITHOUT_DEVICES = {op: {kind: R if got == "device" else got for kind, got in row.items()}
                   for op, row in WITH_DEVICES.items()}


def test_the_table_names_every_op_code():
    assert set(WITH_DEVICES) == set(schema.OP_NAMES)


def test_every_op_code_has_a_writer_and_nothing_else_does():
    assert set(writers.WRITERS) == set(schema.OP_NAMES)
    for op in schema.OP_NAMES:
        assert writers.for_op(op) is writers.WRITERS[op]
    with pytest.raises(PackageError, match="no writer for op code 7"):
        writers.for_op(7)
    assert schema.known_ops() == "0..6"


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A staging root holding one target of each kind; MTD and UBI recognised by name."""
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "dev").mkdir()
    (r / "etc" / "app.conf").write_bytes(b"old")
    (r / "dev" / "mtd4").write_bytes(b"\xff" * 64)
    (r / "upgrade.sh").write_bytes(b"echo\n")
    os.mknod(r / "dev" / "mtd3", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(r / "dev" / "ubi0_1", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    loop = os.stat("/dev/loop7").st_rdev if os.path.exists("/dev/loop7") else None
    if loop is None:
        pytest.skip("no loop device to stand for a block device")
    os.mknod(r / "dev" / "mtdblock3", stat.S_IFBLK | 0o600, loop)
    os.mknod(r / "dev" / "mmcblk0p3", stat.S_IFBLK | 0o600, loop)

    def mtd_index_of(path, *args):  # path: /proc/self/fd/N, as the installer names an open node
        path = os.path.realpath(path)
        m = re.search(r"/dev/mtd(block)?(\d+)$", path)
        return int(m.group(2)) if m and not os.path.isfile(path) else None

    def ubi_volume(path, *args):
        path = os.path.realpath(path)
        if re.search(r"/dev/ubi\d+_\d+$", path) and stat.S_ISCHR(os.stat(path).st_mode):
            return types.SimpleNamespace(type="dynamic", capacity=1 << 20, data_bytes=0, leb_size=0,
                                         vol_name="v")
        return None

    monkeypatch.setattr(flash, "mtd_index_of", mtd_index_of)
    monkeypatch.setattr(flash, "ubi_volume", ubi_volume)
    return str(r)


def _kind(root, op, name, allow_devices):
    """What the installer's target check makes of name for a record of op (both passes check the same)."""
    inst = Installer.__new__(Installer)
    inst.ctx = Context(root=root, fsroot=Root(root), allow_devices=allow_devices, cleaner=StaleCleaner())
    inst.opts = Options(root=root, all_targets=True, allow_devices=allow_devices)
    inst.slots = None
    rec = Record(0, op, name, 0 if op == FD else 16)
    try:
        dests = inst._dests(rec)
    except PackageError as exc:
        if DEBUG:
            print(op, name, exc)
        return R
    try:
        assert len(dests) == 1
        return dests[0][0].kind
    finally:
        for d, _ in dests:
            d.close()


@pytest.mark.parametrize("op", sorted(schema.OP_NAMES), ids=lambda op: schema.OP_NAMES[op])
@pytest.mark.parametrize("allow_devices", [True, False], ids=["allow-devices", "no-devices"])
def test_what_each_record_kind_accepts(root, op, allow_devices):
    want = (WITH_DEVICES if allow_devices else WITHOUT_DEVICES)[op]
    got = {kind: _kind(root, op, name, allow_devices) for kind, name in TARGETS.items()}
    assert got == want
