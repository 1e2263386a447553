"""The power-cut tests' package, the board's old state and what an install leaves
(tests/board/test_power_cut.py): one package made on the host by otapack (--manifest) with
a block record to a raw partition, a UBI volume, a file on a mounted UBIFS, a file delta on
that UBIFS and a raw-partition delta, in that order."""

import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from support import otapack, sha

BIN = Path(sys.executable).parent
GUEST_CUT = "/mnt/proj/tests/board/progress_cut.py"  # the project is on the board at /mnt/proj
#: the stages of the apply pass, in which a record's bytes are written
APPLY = ("erasing", "updating")
SUMMARY = re.compile(r"^otaunpack: note: summary: (\d+) record\(s\): (\d+) written, (\d+) already in place; "
                     r"written: (\d+) file\(s\), (\d+) flash erase block\(s\), (\d+) UBI volume\(s\)$", re.M)


@dataclass
class Layout:
    """Where the records go on one board, and how big its erase blocks are."""

    block: str  # the block record's MTD partition
    block_eb: int
    block_nand: bool
    volume: str  # the UBI volume of the UBI record (/dev/ubiX_Y)
    fs: str  # a mounted UBIFS: the files, the state dir, the work dir
    raw: str  # the raw-partition delta's MTD partition
    raw_eb: int
    raw_nand: bool

    @property
    def app(self):
        return self.fs + "/app"

    @property
    def state(self):
        return self.fs + "/state"

    @property
    def tmp(self):
        return self.fs + "/tmp"


def _changed(old, seed):
    """old with a few scattered edits and a tail: what a new build of a binary looks like."""
    rnd = random.Random(seed)
    new = bytearray(old)
    for _ in range(6):
        at = rnd.randrange(len(new) - 5000)
        new[at:at + 3000] = rnd.randbytes(3000)
    return bytes(new) + rnd.randbytes(40000)


def images(d):
    """The old and new content of every target, as files in d; {name: (old path, new path)}."""
    sizes = {"boot": (384 << 10) + 100, "vol": (512 << 10) + 333, "conf": 256 << 10, "app": 384 << 10,
             "kernel": 512 << 10}
    out = {}
    for i, (name, size) in enumerate(sizes.items()):
        old = os.urandom(size)
        new = _changed(old, i) if name in ("app", "kernel") else os.urandom(size)
        (d / (name + ".old")).write_bytes(old)
        (d / (name + ".new")).write_bytes(new)
        out[name] = (d / (name + ".old"), d / (name + ".new"))
    return out


def package(d, imgs, lay):
    """The package (gzip, as boards get them) that takes lay from the old state to the new."""
    pkg = d / "update.bin"
    otapack("-c", pkg, "--manifest")
    otapack("-a", pkg, "-s", imgs["boot"][1], "-d", lay.block, "--block-update")
    otapack("-a", pkg, "-s", imgs["vol"][1], "-d", lay.volume, "--ubi-update")
    otapack("-a", pkg, "-s", imgs["conf"][1], "-d", lay.app + "/app.conf", "-m", "0x1a4", "--file-update")
    otapack("-a", pkg, "-o", imgs["app"][0], "-n", imgs["app"][1], "-d", lay.app + "/bin/app", "--file-update-diff")
    otapack("-a", pkg, "-o", imgs["kernel"][0], "-n", imgs["kernel"][1], "-d", lay.raw, "--file-update-diff")
    otapack("--gzip", pkg)
    return Path(str(pkg) + ".gz")



def _write_mtd(dev, image, nand):
    if nand:
        return "flash_erase -q {d} 0 0 && nandwrite -q -p {d} {i}".format(d=dev, i=image)
    return "flash_erase -q {d} 0 0 && cat {i} > {d}".format(d=dev, i=image)


def reset(board, imgs, lay):
    """The board back to the old state: old images on the partitions and the volume, the old
    files, no state dir, an empty work dir."""
    old = {name: board.path(pair[0]) for name, pair in imgs.items()}
    board.sh(" && ".join([
        _write_mtd(lay.block, old["boot"], lay.block_nand),
        "ubiupdatevol %s %s" % (lay.volume, old["vol"]),
        _write_mtd(lay.raw, old["kernel"], lay.raw_nand),
        "rm -rf {a} {s} {t} && mkdir -p {a}/bin {t}".format(a=lay.app, s=lay.state, t=lay.tmp),
        "cp {c} {a}/app.conf && cp {p} {a}/bin/app && chmod 600 {a}/app.conf".format(c=old["conf"], p=old["app"],
                                                                                     a=lay.app),
        "sync",
    ]))


def _region(imgs, name, eb):
    """The bytes a partition's image covers, in whole erase blocks."""
    size = imgs[name][1].stat().st_size
    return -(-size // eb) * eb


def _mtd_sha(dev, length, nand):
    if nand:
        return "nanddump --bb=skipbad -q -l {n} -f /tmp/pc.dump {d} && sha256sum < /tmp/pc.dump".format(n=length, d=dev)
    return "head -c %d %s | sha256sum" % (length, dev)


def state(board, imgs, lay):
    """What the install decides: SHA-256 of the partitions' image regions, of the whole volume
    and of the files, the files' modes and the app dir's listing."""
    out = {"block": board.sh(_mtd_sha(lay.block, _region(imgs, "boot", lay.block_eb), lay.block_nand)).split()[0],
           "volume": board.sh("sha256sum < %s" % lay.volume).split()[0],
           "raw": board.sh(_mtd_sha(lay.raw, _region(imgs, "kernel", lay.raw_eb), lay.raw_nand)).split()[0]}
    files = board.sh("cd %s && sha256sum app.conf bin/app && stat -c %%a app.conf bin/app && find . | sort"
                     % lay.app).split()
    out.update({"conf": files[0], "app": files[2], "conf mode": files[4], "app mode": files[5], "listing": files[6:]})
    return out


def expected(imgs, lay, volume_bytes):
    """The state a correct install gives, from the new images: each padded with erased bytes
    to the end of its last erase block (the volume: to its end)."""
    def padded(name, length):
        data = imgs[name][1].read_bytes()
        return sha(data + b"\xff" * (length - len(data)))

    return {"block": padded("boot", _region(imgs, "boot", lay.block_eb)), "volume": padded("vol", volume_bytes),
            "raw": padded("kernel", _region(imgs, "kernel", lay.raw_eb)), "conf": sha(imgs["conf"][1].read_bytes()),
            "app": sha(imgs["app"][1].read_bytes()), "conf mode": "644",
            "listing": [".", "./app.conf", "./bin", "./bin/app"]}


def old_raw(imgs, lay):
    """The raw-partition delta's region as the old state has it (the old image, erased after)."""
    data = imgs["kernel"][0].read_bytes()
    return sha(data + b"\xff" * (_region(imgs, "kernel", lay.raw_eb) - len(data)))


def leftovers(board, lay):
    """Whatever of ours an install left: temp files beside the targets, anything in the work
    dir, anything but the journal (and the install lock) in the state dir."""
    out = board.sh("find {f} -name '.sstarota-*'; ls -A {t}; ls -A {s} 2>/dev/null | grep -vx -e journal "
                   "-e otaunpack.lock; true"
                   .format(f=lay.fs, t=lay.tmp, s=lay.state))
    return out.split()


def otaunpack_args(board, pkg, lay):
    return ["python3", "-m", "sstarota.cli.otaunpack", "-x", board.path(pkg), "-t", lay.tmp,
            "--state-dir", lay.state, "-q"]


def install(board, pkg, lay):
    """The package, installed to the end; the Result and its summary numbers."""
    r = board.run(" ".join(otaunpack_args(board, pkg, lay)))
    m = SUMMARY.search(r.err)
    return r, (tuple(int(x) for x in m.groups()) if m else None)


def cut_command(board, pkg, lay, point, events=None, cut=None, sync=()):
    """The guest command that runs the install and stops it at point: (stages, record, nth),
    the nth event of those stages and that record (progress_cut.py)."""
    stage, record, nth = point
    args = ["python3", GUEST_CUT, "--stage", stage, "--nth", str(nth)]
    if record is not None:
        args += ["--record", str(record)]
    if events:
        args += ["--events", events]
    if cut:
        args += ["--cut", cut, "--sync"] + list(sync)
    return " ".join(args + ["--"] + otaunpack_args(board, pkg, lay))


def run_cut(board, pkg, lay, point, events=None):
    """Install, killed (SIGKILL) at point; the driver's report."""
    r = board.run(cut_command(board, pkg, lay, point, events)).check()
    return json.loads(r.out)


def kill_points(events):
    """The kill points, from a whole install's progress events: the verify pass half-way,
    then for every record its start (its first "updating" event: the boundary after the
    record before it) and its apply-pass event half-way through its events (its bytes: a
    byte-progress event). {name: (stages, record, nth)}: the nth event of those stages and
    that record, met again in every run from the same old state. The last record is the
    manifest: its start is the point after the last write."""
    verify = [e for e in events if e["stage"] == "verifying"]
    assert len(verify) > 2, "no byte progress in the verify pass"
    points = {"verify, half-way": ("verifying", None, len(verify) // 2 + 1)}
    records = events[-1]["records"]
    for rec in range(1, records + 1):
        mine = [e for e in events if e["stage"] in APPLY and e["record"] == rec]
        assert mine and mine[0]["stage"] == "updating", "record %d starts with no updating event" % rec
        points["record %d, start" % rec] = ("updating", rec, 1)
        if rec < records:
            assert len(mine) > 2, "record %d has no byte-progress events: %s" % (rec, mine)
            points["record %d, half-way" % rec] = (",".join(APPLY), rec, len(mine) // 2 + 1)
    return points
