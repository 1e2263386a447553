"""Power cuts and re-runs (issue 15), on the host: staged targets under --root, the
installer killed with SIGKILL at every progress event of an install, then the same
package installed again. The qemu boards repeat this on real NAND, UBI and UBIFS
(tests/board/), and with a real power cut.
"""

import hashlib
import json
import os
import random
import signal
import shutil
import tempfile

import pytest

from support import otapack, otaunpack, run_hooked, snapshot, summary

BEGIN = b'echo begin > "$OTA_ROOT/begin-ran"\n'  # idempotent, as begin and end scripts must be
END = b'echo "end $OTA_STATUS" > "$OTA_ROOT/end-ran"\n'


def _content(rng, n):
    """Firmware-like: runs of structure a delta can use, and noise."""
    out = bytearray()
    while len(out) < n:
        out += bytes(rng.randrange(4)) * rng.randrange(1, 300) + rng.randbytes(rng.randrange(1, 200))
    return bytes(out[:n])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = random.Random(15)
    old_app, old_part = _content(rng, 400000), _content(rng, 600000)
    new_app = old_app[:100000] + b"new code" * 2000 + old_app[116000:]
    new_part = old_part[:300000] + rng.randbytes(20000) + old_part[320000:] + b"tail" * 1000
    files = {"kernel": _content(rng, 700000), "vol": _content(rng, 300000), "app.conf": b"mode=ota\n",
             "new.bin": rng.randbytes(50000), "app.old": old_app, "app.new": new_app, "part.old": old_part,
             "part.new": new_part, "begin.sh": BEGIN, "end.sh": END}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def every_kind_package(inputs, path, manifest=True):
    """Every kind a power cut can interrupt: a partition image, a UBI volume image, files
    (update, add, delete), a file delta and a raw-partition delta."""
    i = inputs
    otapack("-c", path, "-b", i / "begin.sh", "-e", i / "end.sh", *(["--manifest"] if manifest else []))
    for args in (["-s", i / "kernel", "-d", "/dev/mtd2", "--block-update"],
                 ["-s", i / "vol", "-d", "/dev/ubi0_0", "--ubi-update"],
                 ["-s", i / "app.conf", "-d", "/data/app.conf", "-m", "0x1a4", "--file-update"],
                 ["-s", i / "new.bin", "-d", "/data/new.bin", "--file-add"],
                 ["-d", "/data/obsolete.txt", "--file-delete"],
                 ["-o", i / "app.old", "-n", i / "app.new", "-d", "/data/app.bin", "--file-update-diff"],
                 ["-o", i / "part.old", "-n", i / "part.new", "-d", "/dev/mtd3", "--file-update-diff"]):
        otapack("-a", path, *args)
    return path


def old_board(root, inputs):
    """The board before the update."""
    (root / "dev").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "dev/mtd2").write_bytes(b"\xff" * 800000)
    (root / "dev/ubi0_0").write_bytes(b"old volume")
    (root / "dev/mtd3").write_bytes((inputs / "part.old").read_bytes())
    (root / "data/app.conf").write_bytes(b"mode=old\n")
    (root / "data/app.bin").write_bytes((inputs / "app.old").read_bytes())
    (root / "data/obsolete.txt").write_bytes(b"x\n")


def state_files(state):
    """What a state directory holds, less the lock an install holds it by."""
    return sorted(n for n in os.listdir(state) if n != "otaunpack.lock")


def install_staged(pkg, root, state, *extra):
    proc = otaunpack("-r", pkg, "--root", root, "-t", state.parent, "--state-dir", state, *extra, text=False)
    return proc


def ours(root, work):
    """Files of ours an install may leave: temp files beside targets, work files."""
    left = [p for p, _ in snapshot(root).items() if os.path.basename(p).startswith(".sstarota-")]
    return left + [n for n in os.listdir(work) if n.startswith("sstarota-") and n != "state"]


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory):
    """The end state of an uninterrupted install, and the package (with its manifest)."""
    d = tmp_path_factory.mktemp("clean")
    pkg = every_kind_package(inputs, d / "pkg.bin")
    root = d / "root"
    old_board(root, inputs)
    proc = install_staged(pkg, root, d / "state")
    assert proc.returncode == 0, proc.stderr.decode()
    assert summary(proc) == (7, 7, 0, 7, 0, 0)  # staged under --root, the images are files too
    return pkg, snapshot(root)


def test_a_rerun_of_an_installed_package_writes_nothing(clean, tmp_path, inputs):
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    assert install_staged(pkg, root, state).returncode == 0
    again = install_staged(pkg, root, state)
    assert again.returncode == 0, again.stderr.decode()
    assert summary(again) == (7, 0, 7, 0, 0, 0)
    assert snapshot(root) == want
    # nothing ran since the verify pass (no scripts): the package is not read a second time
    quick = install_staged(pkg, root, state, "--no-scripts")
    assert quick.returncode == 0 and summary(quick) == (7, 0, 7, 0, 0, 0), quick.stderr.decode()
    assert b"every record is in place: nothing to write, the package is not read again" in quick.stderr
    assert snapshot(root) == want
    dry = otaunpack("-r", pkg, "--root", root, "--state-dir", state, "--dry-run", text=False)
    lines = [ln for ln in dry.stdout.decode().splitlines() if ln.startswith("  ")]
    assert len(lines) == 7 and all(ln.endswith("(in place)") for ln in lines), dry.stdout.decode()
    assert dry.stdout.decode().splitlines()[-1] == "targets: 7 already in place, 0 to write"
    assert state_files(state) == ["journal"]


def stages_of(pkg, root, state):
    """Every progress event of an install, as (stage, record, done)."""
    log = state.parent / "events.json"
    proc = run_hooked(pkg, root, """
        with open(%r, "a") as f:
            f.write("%%s %%d %%d\\n" %% (e.stage, e.record, e.done))
    """ % str(log), extra="--state-dir %s" % state)
    assert proc.returncode == 0, proc.stderr
    return [(ln.split()[0], int(ln.split()[1]), int(ln.split()[2])) for ln in log.read_text().splitlines()]


def test_killed_at_every_event_then_run_again_ends_as_a_clean_install(clean, tmp_path, inputs):
    pkg, want = clean
    probe = tmp_path / "probe"
    old_board(probe / "root", inputs)
    events = stages_of(pkg, probe / "root", probe / "state")
    stages = {e[0] for e in events}
    assert {"verifying", "begin-script", "updating", "end-script"} <= stages
    # every event of the apply pass (record boundaries and each block of every record), and
    # a sample of the verify pass
    points = [n for n, e in enumerate(events) if e[0] not in ("verifying", "start")]
    points += [n for n, e in enumerate(events) if e[0] == "verifying"][::7]
    assert len(points) > 40
    for n in points:
        work = tmp_path / ("k%d" % n)
        root = work / "root"
        old_board(root, inputs)
        state = work / "state"
        killed = run_hooked(pkg, root, """
            state.setdefault("n", 0)
            if state["n"] == %d:
                os.kill(os.getpid(), signal.SIGKILL)
            state["n"] += 1
        """ % n, extra="-t %s --state-dir %s" % (work, state))
        assert killed.returncode == -signal.SIGKILL, (n, events[n], killed.stderr)
        again = install_staged(pkg, root, state)
        assert again.returncode == 0, (n, events[n], again.stderr.decode())
        got = snapshot(root)
        assert got == want, (n, events[n], sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k)))
        assert ours(root, work) == [], (n, events[n])
        assert state_files(state) == ["journal"], (n, events[n])


def kill_once_stashed(pkg, root, state):
    """Install pkg, killed with SIGKILL once the raw-partition delta (record 7) has its result
    stashed, complete, in the state directory."""
    killed = run_hooked(pkg, root, """
        if e.record == 7 and os.path.isdir(%r) and any(n.startswith("stash-") and not n.endswith(".tmp")
                                                   for n in os.listdir(%r)):
            os.kill(os.getpid(), signal.SIGKILL)
    """ % (str(state), str(state)), extra="--state-dir %s" % state)
    assert killed.returncode == -signal.SIGKILL, killed.stderr


def test_a_partition_neither_old_nor_new_is_finished_from_the_stash(clean, tmp_path, inputs):
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    kill_once_stashed(pkg, root, state)
    # the partition was half written: its first half new, the rest old
    new, old = (inputs / "part.new").read_bytes(), (inputs / "part.old").read_bytes()
    (root / "dev/mtd3").write_bytes(new[:310000] + old[310000:])
    dry = otaunpack("-r", pkg, "--root", root, "--state-dir", state, "--dry-run", text=False)
    assert "/dev/mtd3, " in dry.stdout.decode() and "(from the stash)" in dry.stdout.decode()
    again = install_staged(pkg, root, state)
    assert again.returncode == 0, again.stderr.decode()
    assert "writing the result stashed by an interrupted run" in again.stderr.decode()
    assert snapshot(root) == want
    assert state_files(state) == ["journal"]


def test_without_the_stash_a_half_written_partition_is_refused_not_patched(clean, tmp_path, inputs):
    pkg, _ = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    new, old = (inputs / "part.new").read_bytes(), (inputs / "part.old").read_bytes()
    (root / "dev/mtd3").write_bytes(new[:310000] + old[310000:])
    before = snapshot(root)
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 3
    err = proc.stderr.decode()
    assert "/dev/mtd3 is not the content the delta was made from" in err and "nor is it the delta's result" in err
    assert snapshot(root) == before


def test_a_package_without_a_manifest_is_not_patched_twice(inputs, tmp_path):
    pkg = every_kind_package(inputs, tmp_path / "plain.bin", manifest=False)
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    assert install_staged(pkg, root, state).returncode == 0
    want = snapshot(root)
    again = install_staged(pkg, root, state)
    assert again.returncode == 0, again.stderr.decode()
    assert summary(again)[1:] == (0, 7, 0, 0, 0)
    assert snapshot(root) == want
    assert (root / "data/app.bin").read_bytes() == (inputs / "app.new").read_bytes()


def test_a_new_package_removes_the_stashes_of_another(clean, tmp_path, inputs):
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    state.mkdir()
    (state / "stash-6-0123abcd").write_bytes(b"of an older package")
    (state / "journal").write_text(json.dumps({"package": "0" * 64, "completed": 6, "pending": [
        {"record": 6, "target": "/dev/mtd3", "sha256": "0" * 64, "len": 19, "stash": "stash-6-0123abcd"}]}))
    proc = install_staged(pkg, root, state)
    assert proc.returncode == 0, proc.stderr.decode()
    assert snapshot(root) == want
    assert state_files(state) == ["journal"]
    assert json.loads((state / "journal").read_text())["completed"] == 8


# ---------------------------------------------------------------------------- what a review found


def test_a_target_the_begin_script_erases_is_written_although_it_was_in_place(inputs, tmp_path):
    """In place at the verify pass, then erased by the begin script (flash_erase, ubiformat,
    rm): the apply pass reads it again and writes it."""
    begin = tmp_path / "begin.sh"
    begin.write_text('printf "erased" > "$OTA_ROOT/dev/mtd2"; rm "$OTA_ROOT/data/app.conf"\n')
    pkg = tmp_path / "p.bin"
    otapack("-c", pkg, "-b", begin, "--manifest")
    otapack("-a", pkg, "-s", inputs / "kernel", "-d", "/dev/mtd2", "--block-update")
    otapack("-a", pkg, "-s", inputs / "app.conf", "-d", "/data/app.conf", "--file-update")
    root = tmp_path / "root"
    old_board(root, inputs)
    (root / "dev/mtd2").write_bytes((inputs / "kernel").read_bytes() + b"\xff" * 100000)
    (root / "data/app.conf").write_bytes((inputs / "app.conf").read_bytes())
    proc = install_staged(pkg, root, tmp_path / "state")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (root / "dev/mtd2").read_bytes() == (inputs / "kernel").read_bytes()  # "erased" was 6 bytes
    assert (root / "data/app.conf").read_bytes() == (inputs / "app.conf").read_bytes()
    assert summary(proc)[1:3] == (2, 0)


def test_two_records_on_one_target_end_as_the_last_one_says(inputs, tmp_path):
    pkg = tmp_path / "p.bin"
    otapack("-c", pkg, "--manifest")
    otapack("-a", pkg, "-d", "/data/app.conf", "--file-delete")
    otapack("-a", pkg, "-s", inputs / "app.conf", "-d", "/data/app.conf", "--file-add")
    root = tmp_path / "root"
    old_board(root, inputs)
    (root / "data/app.conf").write_bytes((inputs / "app.conf").read_bytes())
    proc = install_staged(pkg, root, tmp_path / "state")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (root / "data/app.conf").read_bytes() == (inputs / "app.conf").read_bytes()


def test_a_journal_cannot_put_another_result_than_the_manifests(clean, tmp_path, inputs):
    """A state directory someone wrote into: a stash of other content, journaled with its own
    hash, for the package being installed. The manifest's result hash decides: not used."""
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    kill_once_stashed(pkg, root, state)
    journal = json.loads((state / "journal").read_text())
    (entry,) = journal["pending"]
    evil = b"EVIL" * 1000
    (state / entry["stash"]).write_bytes(evil)
    entry.update(sha256=hashlib.sha256(evil).hexdigest(), len=len(evil))
    (state / "journal").write_text(json.dumps(journal))
    (root / "dev/mtd3").write_bytes((inputs / "part.old").read_bytes())  # the partition holds its source again
    proc = install_staged(pkg, root, state)
    assert proc.returncode == 0, proc.stderr.decode()
    assert snapshot(root) == want


def test_the_journal_is_the_packages_in_this_root_only(inputs, tmp_path):
    """A package without a manifest installed into one root, then another, with one -t: the
    journal of the first says nothing about the second."""
    pkg = every_kind_package(inputs, tmp_path / "plain.bin", manifest=False)
    for name in ("a", "b"):
        root = tmp_path / name
        old_board(root, inputs)
        proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert (root / "data/app.bin").read_bytes() == (inputs / "app.new").read_bytes(), name


def test_a_state_directory_others_can_write_is_refused(clean, tmp_path, inputs):
    pkg, _ = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    before = snapshot(root)
    proc = install_staged(pkg, root, state)
    assert proc.returncode == 2 and b"not a directory of this user's that only it can write" in proc.stderr
    assert b"Traceback" not in proc.stderr and snapshot(root) == before


def test_a_state_dir_in_the_board_config_stays_inside_the_root(clean, tmp_path, inputs):
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    (root / "etc/sstarota").mkdir(parents=True)
    (root / "etc/sstarota/board.conf").write_text("state_dir = /../../outside\n")
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not (tmp_path / "outside").exists()
    assert state_files(root / "outside") == ["journal"]


def test_a_garbled_journal_is_not_used_and_no_traceback(clean, tmp_path, inputs):
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("[" * 200000)
    proc = install_staged(pkg, root, state)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"journal in %s is unreadable" % bytes(state) in proc.stderr
    assert snapshot(root) == want and state_files(state) == ["journal"]


def test_a_file_an_earlier_record_rewrote_is_patched_again_without_a_manifest(inputs, tmp_path):
    """No manifest: a file-update of a file to its old content, then a delta of it. Run again,
    the first record rewrites the old content; the journal's mark must not call the delta done."""
    pkg = tmp_path / "p.bin"
    otapack("-c", pkg)
    otapack("-a", pkg, "-s", inputs / "app.old", "-d", "/data/app.bin", "--file-update")
    otapack("-a", pkg, "-o", inputs / "app.old", "-n", inputs / "app.new", "-d", "/data/app.bin", "--file-update-diff")
    root = tmp_path / "root"
    old_board(root, inputs)
    for _ in range(2):
        proc = install_staged(pkg, root, tmp_path / "state", "--no-scripts")
        assert proc.returncode == 0, proc.stderr.decode()
        assert (root / "data/app.bin").read_bytes() == (inputs / "app.new").read_bytes()


def test_a_partition_cut_while_written_is_written_again_from_its_stash(clean, tmp_path, inputs):
    """The journal says the raw-partition delta was being written: even if the partition reads
    back as the result (NAND pages cut mid-program can), the re-run writes the stash."""
    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    kill_once_stashed(pkg, root, state)
    journal = json.loads((state / "journal").read_text())
    journal["writing"] = 6  # as the board's writer of /dev/mtd3 (a device) journals it
    (state / "journal").write_text(json.dumps(journal))
    (root / "dev/mtd3").write_bytes((inputs / "part.new").read_bytes())  # it reads back as the result
    proc = install_staged(pkg, root, state)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"writing the result stashed by an interrupted run" in proc.stderr
    assert snapshot(root) == want and state_files(state) == ["journal"]
    assert json.loads((state / "journal").read_text())["writing"] is None


# ---------------------------------------------------------------------------- re-runs without a manifest


def test_a_delta_without_a_manifest_run_again_with_a_fresh_work_directory_is_in_place(inputs, tmp_path):
    """The journal is not under -t: a re-run after a reboot (a fresh tmpfs /tmp) knows the
    deltas it made by their hashes, kept in the board's state directory."""
    pkg = every_kind_package(inputs, tmp_path / "plain.bin", manifest=False)
    root = tmp_path / "root"
    old_board(root, inputs)
    for n in range(2):
        work = tmp_path / ("tmp%d" % n)
        work.mkdir()
        proc = otaunpack("-r", pkg, "--root", root, "-t", work, text=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert (root / "data/app.bin").read_bytes() == (inputs / "app.new").read_bytes(), n
        assert (root / "dev/mtd3").read_bytes() == (inputs / "part.new").read_bytes(), n
    assert summary(proc)[1:3] == (0, 7)
    assert state_files(root / "var/lib/sstarota") == ["journal"]


def test_a_delta_target_neither_old_nor_new_without_a_manifest_is_refused(inputs, tmp_path):
    """Its first run recorded the source and result hashes (kept when another package is
    installed since): a partition holding neither, with no stash, is refused, not patched
    into garbage."""
    pkg = every_kind_package(inputs, tmp_path / "plain.bin", manifest=False)
    root = tmp_path / "root"
    old_board(root, inputs)
    assert otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False).returncode == 0
    other = tmp_path / "other.bin"
    otapack("-c", other)
    otapack("-a", other, "-s", inputs / "app.conf", "-d", "/data/other.conf", "--file-add")
    assert otaunpack("-r", other, "--root", root, "-t", tmp_path, text=False).returncode == 0
    new, old = (inputs / "part.new").read_bytes(), (inputs / "part.old").read_bytes()
    (root / "dev/mtd3").write_bytes(new[:310000] + old[310000:])
    before = snapshot(root)
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"/dev/mtd3" in proc.stderr and snapshot(root) == before
    # the old content again: patched as the first time
    (root / "dev/mtd3").write_bytes(old)
    (root / "data/app.bin").write_bytes((inputs / "app.old").read_bytes())
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (root / "dev/mtd3").read_bytes() == new
    assert (root / "data/app.bin").read_bytes() == (inputs / "app.new").read_bytes()


def install_with_state_on_tmpfs(pkg, root, work):
    """Install with the state directory in /dev/shm (tmpfs: lost at a reboot), removed after."""
    shm = tempfile.mkdtemp(dir="/dev/shm")
    try:
        return otaunpack("-r", pkg, "--root", root, "-t", work, "--state-dir", os.path.join(shm, "state"), text=False)
    finally:
        shutil.rmtree(shm)


def test_a_delta_without_a_manifest_needs_a_state_directory_that_survives_a_reboot(inputs, tmp_path):
    """A state directory on tmpfs cannot tell a re-run after a reboot from a first run: refused
    before anything is written, with the way out."""
    pkg = every_kind_package(inputs, tmp_path / "plain.bin", manifest=False)
    root = tmp_path / "root"
    old_board(root, inputs)
    before = snapshot(root)
    proc = install_with_state_on_tmpfs(pkg, root, tmp_path)
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"--state-dir" in proc.stderr and b"tmpfs" in proc.stderr
    assert snapshot(root) == before
    # a package whose manifest names every delta's source and result needs no such directory
    pkg = every_kind_package(inputs, tmp_path / "m.bin")
    proc = install_with_state_on_tmpfs(pkg, root, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()


def test_a_journal_naming_the_package_by_its_block_chain_is_still_known(clean, tmp_path, inputs, ram_dir):
    """An otaunpack before the record digests named a package by the SHA-256 chain over its
    128 KiB blocks. A re-run after a power cut (say by the newer otaunpack the package itself
    installed) with -t in RAM would spool and take no chain: it sees the unfinished journal it
    does not know, drops the spool, reads the package twice and finds it by the chain."""
    import gzip

    from sstarota.install.blocks import ChainTap

    pkg, want = clean
    root = tmp_path / "root"
    old_board(root, inputs)
    state = tmp_path / "state"
    kill_once_stashed(pkg, root, state)
    with open(pkg, "rb") as f:
        tap = ChainTap(f)
        while tap.read(1 << 16):
            pass
    chained = hashlib.sha256(b"".join(tap.finish()) + b"%d" % tap.size).hexdigest()
    journal = json.loads((state / "journal").read_text())
    journal["package"] = "%s root=%s all-targets=0" % (chained, os.path.realpath(root))
    journal["writing"] = 6
    (state / "journal").write_text(json.dumps(journal))
    (root / "dev/mtd3").write_bytes((inputs / "part.new").read_bytes())  # it reads back as the result
    gz = tmp_path / "pkg.bin.gz"
    gz.write_bytes(gzip.compress(pkg.read_bytes(), 6))
    proc = otaunpack("-x", gz, "--root", root, "-t", ram_dir, "--state-dir", state, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"writing the result stashed by an interrupted run" in proc.stderr
    assert b"two reads of the package: the journal of an interrupted run" in proc.stderr
    assert snapshot(root) == want
