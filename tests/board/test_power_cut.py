"""Power cuts: whatever point an install is stopped at, running the same package again ends
with the system a clean install gives, exit 0, and nothing of ours left behind.

The package (powercut.py, made on the host by otapack --manifest), records in this order:
  1 --block-update      a 384 KiB image to a raw partition
  2 --ubi-update        a 512 KiB image to a UBI volume
  3 --file-update       a 256 KiB file on a mounted UBIFS
  4 --file-update-diff  a 384 KiB file on that UBIFS
  5 --file-update-diff  a 512 KiB image on a raw partition (the old image is on it)
  6 the manifest
otaunpack runs with -t and --state-dir on the UBIFS, as a board keeps them on flash.
"""

import json

import pytest

import boardvm
from boardvm_disks import DiskBoardVM, block2mtd_setup, disk_device, flash_image
from powercut import (APPLY, Layout, cut_command, expected, images, install, kill_points, leftovers, old_raw, package,
                      reset, run_cut, state)

pytestmark = [pytest.mark.board, pytest.mark.xdist_group("board")]  # one booted board: one worker

#: a stage no event has: the whole install, with its events
NO_KILL = ("none", None, 1)
#: the UBI volumes a test makes for itself: the UBI record's target and the UBIFS
VOLUMES = "ubimkvol {ubi} -N pcvol -s 2MiB >/dev/null && ubimkvol {ubi} -N pcfs {fs} >/dev/null"
#: the UBIFS mounted at /mnt/pc; prints the UBI record's volume number
MOUNT = ("mkdir -p /mnt/pc && mount -t ubifs {n}:pcfs /mnt/pc && "
         "ubinfo {ubi} -N pcvol | sed -n 's/^Volume ID: *\\([0-9]*\\).*/\\1/p'")
#: where the first test kills the install (powercut.kill_points finds them in its progress events)
KILL_POINTS = ["verify, half-way",
               "record 1, start", "record 1, half-way",  # the block record (NAND)
               "record 2, start", "record 2, half-way",  # the UBI volume
               "record 3, start", "record 3, half-way",  # the file on UBIFS
               "record 4, start", "record 4, half-way",  # the file delta
               "record 5, start", "record 5, half-way",  # the raw-partition delta
               "record 6, start"]  # the manifest: everything written, the install not finished


def clean_install(board, work, imgs, lay, pkg):
    """From the old state, the whole install: its end state (checked against the images), its
    progress events; then the same package again writes nothing."""
    reset(board, imgs, lay)
    events = work / "clean.events"
    rep = run_cut(board, pkg, lay, NO_KILL, events=board.path(events))
    assert rep["hit"] is None and rep["rc"] == 0, rep
    clean = state(board, imgs, lay)
    volume_bytes = int(board.sh("cat /sys/class/ubi/%s/data_bytes" % lay.volume.rsplit("/", 1)[1]))
    want = expected(imgs, lay, volume_bytes)
    assert {k: clean[k] for k in want} == want
    assert leftovers(board, lay) == []
    r, summary = install(board, pkg, lay)
    assert r.rc == 0 and summary, r.err
    records, written, in_place, files, blocks, volumes = summary
    assert (written, in_place, files, blocks, volumes) == (0, records, 0, 0, 0), r.err
    assert "written: 0 file(s), 0 flash erase block(s), 0 UBI volume(s)" in r.err
    assert state(board, imgs, lay) == clean
    return clean, [json.loads(line) for line in events.read_text().splitlines()]


def finish_and_compare(board, imgs, lay, pkg, clean):
    """The same package again after a stop: what went wrong, as text (empty: nothing)."""
    r, summary = install(board, pkg, lay)
    if r.rc != 0 or summary is None:
        return "re-run exit %d, summary %s:\n%s" % (r.rc, summary, r.err)
    problems = []
    now = state(board, imgs, lay)
    if now != clean:
        problems.append("state differs from the clean install: %s" % {k: v for k, v in now.items() if clean[k] != v})
    left = leftovers(board, lay)
    if left:
        problems.append("left behind: %s" % left)
    return "; ".join(problems)


@pytest.fixture
def pc_board(board):
    """The shared board with two UBI volumes of this test's own on ubi0 (on nandsim's mtd6), the
    UBIFS mounted at /mnt/pc; removed again afterwards."""
    drop = "umount /mnt/pc 2>/dev/null; for v in pcfs pcvol; do ubirmvol /dev/ubi0 -N $v 2>/dev/null; done; true"
    board.sh(drop)
    board.sh(VOLUMES.format(ubi="/dev/ubi0", fs="-s 16MiB"))
    vol = board.sh(MOUNT.format(n="ubi0", ubi="/dev/ubi0")).strip()
    try:
        yield board, Layout(block="/dev/mtd5", block_eb=128 << 10, block_nand=True, volume="/dev/ubi0_" + vol,
                            fs="/mnt/pc", raw="/dev/mtd7", raw_eb=64 << 10, raw_nand=False)
    finally:
        board.run(drop)


def test_sigkill_at_every_record_boundary_and_mid_record_then_the_same_package_again(pc_board):
    """SIGKILL at each of KILL_POINTS, found in the clean install's progress events: the
    verify pass half-way; for each of the 5 records its first "updating" event (the boundary
    after the record before it) and its apply-pass event half-way through its events (a
    byte-progress event); the manifest record's start (all written, the install not
    finished): 12 in all. Each from the old state, then the same package again. The block
    record's partition (nandsim mtd5) has factory bad blocks in the range it writes; the
    raw-partition delta goes to mtdram (mtd7)."""
    board, lay = pc_board
    work = board.fresh("power-cut-kill")
    imgs = images(work)
    pkg = package(work, imgs, lay)
    clean, events = clean_install(board, work, imgs, lay, pkg)
    points = kill_points(events)
    assert list(points) == KILL_POINTS
    failures = {}
    for name, point in points.items():
        reset(board, imgs, lay)
        rep = run_cut(board, pkg, lay, point)
        if rep["hit"] is None:
            failures[name] = "never reached (exit %s): %s" % (rep["rc"], rep["err"])
            continue
        problem = finish_and_compare(board, imgs, lay, pkg, clean)
        if problem:
            failures[name] = "killed at %s (exit %s): %s" % (rep["hit"], rep["rc"], problem)
    assert not failures, "\n".join("%s: %s" % item for item in failures.items())


def _attach(board, first):
    """block2mtd over the three disks (mtd0 boot, mtd1 kernel, mtd2 ubi), UBI on mtd2, the
    UBIFS mounted; the first time the volumes are made. The UBI volume's device name."""
    board.sh(block2mtd_setup(["boot", "kernel", "ubi"]) + "modprobe ubi && modprobe zstd && modprobe ubifs\n"
             "ubiattach -p /dev/mtd2 -d 0 >/dev/null")
    if first:
        board.sh(VOLUMES.format(ubi="/dev/ubi0", fs="-m"))
    return "/dev/ubi0_" + board.sh(MOUNT.format(n="ubi0", ubi="/dev/ubi0")).strip()


def _power_cut(vm, board, pkg, lay, point, sync):
    """Install, and cut the power at point; boot again and attach the flash."""
    cut = board.work / "cut"
    job = vm.submit(cut_command(board, pkg, lay, point, cut=board.path(cut), sync=sync))
    vm.wait_file(cut, job)
    vm.power_cut()
    cut.unlink()
    vm.start()
    assert _attach(board, False) == lay.volume


def test_power_cuts_mid_way_through_a_volume_and_a_raw_partition_write(shared_board, tmp_path):
    """Power cuts, not a killed process: the VM is stopped hard (SIGKILL of qemu, no
    shutdown, no sync), booted again on the same flash, UBI attached and the UBIFS mounted
    again (its journal replayed). The first cut comes half-way through the UBI volume's
    update (record 2); the re-run is cut half-way through the raw-partition delta's write
    (record 5), after its stash was made; the next re-run ends the update.

    Devices: three virtio disks (image files on the host) made MTD devices by block2mtd:
    mtd0 (2 MiB) the block record's partition, mtd1 (2 MiB) the raw-partition delta's,
    mtd2 (32 MiB) under UBI with the UBI record's volume and the UBIFS (files, the state dir,
    the work dir). Why: nandsim and mtdram keep their flash in the guest's RAM and lose it
    with the VM, and the armhf kernel has no block2mtd, so this runs on the x86 board.
    block2mtd completes writes in the guest's page cache; at a cut the guest freezes the
    installer and fsyncs the disks, so they hold every completed MTD write and nothing
    later, as real flash would (scripts/boardvm_disks.py)."""
    shared_board.park()  # one VM at a time
    disks = {"boot": flash_image(tmp_path / "boot.img", 2 << 20),
             "kernel": flash_image(tmp_path / "kernel.img", 2 << 20),
             "ubi": flash_image(tmp_path / "ubi.img", 32 << 20)}
    (tmp_path / "work").mkdir()
    vm = DiskBoardVM(boardvm.setup(), tmp_path / "work", disks)
    board = boardvm.Workspace(vm, tmp_path / "work")
    try:
        vm.start()
        lay = Layout(block="/dev/mtd0", block_eb=128 << 10, block_nand=False, volume=_attach(board, True),
                     fs="/mnt/pc", raw="/dev/mtd1", raw_eb=128 << 10, raw_nand=False)
        d = board.fresh("power-cut")
        imgs = images(d)
        pkg = package(d, imgs, lay)
        clean, events = clean_install(board, d, imgs, lay, pkg)
        volume = [e for e in events if e["stage"] in APPLY and e["record"] == 2]
        writes = [e for e in events if e["stage"] == "erasing" and e["record"] == 5]
        assert len(volume) > 2 and len(writes) > 2, "no byte progress in the volume's or the partition's write"
        sync = [disk_device(vm, name) for name in disks]
        reset(board, imgs, lay)
        _power_cut(vm, board, pkg, lay, (",".join(APPLY), 2, len(volume) // 2 + 1), sync)
        # UBI's update marker: the cut came mid-way through the volume's update
        assert board.sh("cat /sys/class/ubi/%s/upd_marker" % lay.volume.rsplit("/", 1)[1]).strip() == "1"
        _power_cut(vm, board, pkg, lay, ("erasing", 5, len(writes) // 2 + 1), sync)
        # the partition neither old nor new, its stash and the journal on the UBIFS
        raw = state(board, imgs, lay)["raw"]
        assert raw not in (clean["raw"], old_raw(imgs, lay)), "the cut did not come mid-way through the write"
        kept = board.sh("ls %s" % lay.state).split()
        assert "journal" in kept and any(n.startswith("stash-") for n in kept), kept
        assert finish_and_compare(board, imgs, lay, pkg, clean) == ""
    finally:
        vm.power_cut()
