"""What goes onto the board: the update wrapper and the example begin/end scripts."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import packer

from support import GOLDEN, otaunpack_events

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRAPPER = PROJECT / "board" / "sstarota-update"
EXAMPLES = PROJECT / "board" / "examples"


def start_fake_app(tmp_path):
    """A process named 'fakeapp', not our child (so it is reaped when it dies)."""
    exe = tmp_path / "fakeapp"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    os.chmod(exe, 0o755)
    out = subprocess.run(["sh", "-c", "%s 600 >/dev/null 2>&1 & echo $!" % exe], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path("/proc/%d/stat" % pid).read_text().split()[2] != "Z"


def update_package(tmp_path, begin=None, data=None, end=None):
    pkg = tmp_path / "SStarOta.bin"
    packer.create(str(pkg), begin=str(begin or EXAMPLES / "begin.sh"), end=str(end or EXAMPLES / "end.sh"))
    src = GOLDEN / "v0.4/in/files/app.conf"
    if data is not None:
        src = tmp_path / "app.conf"
        src.write_bytes(data)
    packer.append(str(pkg), packer.operation_specs("file-update", src=str(src), dst="/mnt/data/app.conf", mode=0o644))
    return packer.gzip_package(str(pkg))


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: what the wrapper runs, taken from busybox when the host has it (as on a board)
APPLETS = ("sh", "sha256sum", "sed", "awk", "df", "ls", "mkdir", "rmdir", "chmod", "wc", "tail", "date", "cat", "mv",
           "rm", "grep", "sync", "id", "dirname", "pidof", "kill", "sleep", "umount", "mount", "tr", "mktemp")
BUSYBOX = shutil.which("busybox")


def board_path(tmp_path, applets=True):
    """A bin directory for the front of PATH: busybox's applets, stubs that record their calls
    (reboot, logger, on-failure; lines in tmp_path/calls/NAME) and a shim that counts the
    runs of the real otaunpack."""
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    calls.mkdir()
    if BUSYBOX and applets:
        for applet in APPLETS:
            (bindir / applet).symlink_to(BUSYBOX)
    stubs = {"reboot": 'echo "$*" >> "%s/reboot"\n',
             "on-failure": 'echo "$*" >> "%s/on-failure"\n',
             "on-unchanged": 'echo "$*" >> "%s/on-unchanged"\n',
             "logger": 'echo "$*" >> "%s/logger"\n[ $# -gt 2 ] || cat >> "%%s/logger"\n',
             "otaunpack": 'echo "$*" >> "%%s/otaunpack"\nfor a; do [ "$t" = -t ] && ls -ldn "$a" >> "%%s/workdir"; '
                          't=$a; done\nexec %s "$@"\n'}
    for name, body in stubs.items():
        if name == "logger":
            body = body % calls % calls
        elif name == "otaunpack":
            body = (body % (BIN / "otaunpack")) % (calls, calls)
        else:
            body = body % calls
        (bindir / name).write_text("#!/bin/sh\n" + body)
        os.chmod(bindir / name, 0o755)
    return bindir


def calls(tmp_path, name):
    """The lines a stub recorded (one per call for reboot, on-failure and otaunpack)."""
    f = tmp_path / "calls" / name
    return f.read_text().splitlines() if f.exists() else []


def wrapper_env(tmp_path, root, **extra):
    bindir = tmp_path / "bin" if (tmp_path / "bin").exists() else board_path(tmp_path)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), OTA_WORKDIR=str(tmp_path / "work"),
               OTA_ROOT=str(root), OTA_STATE_DIR=str(tmp_path / "state"), OTAUNPACK=str(bindir / "otaunpack"),
               OTA_PACKAGES=str(tmp_path / "nowhere.bin.gz"),
               # by path: busybox sh runs its own applets (reboot, logger) before any on PATH
               OTA_REBOOT=str(bindir / "reboot"), OTA_LOGGER=str(bindir / "logger"),
               OTA_ON_FAILURE=str(bindir / "on-failure"))
    for name in ("OTA_LOG", "OTA_MAX_TRIES", "OTA_SYSLOG", "OTA_STOP_APPS", "OTA_UMOUNT", "OTA_ON_UNCHANGED"):
        env.pop(name, None)
    env.update(extra)
    return env


def boot(tmp_path, env, *args):
    """One run of the wrapper, as at a boot: in a session of its own, under the board's sh."""
    shell = str(tmp_path / "bin" / "sh") if (tmp_path / "bin" / "sh").exists() else "sh"
    return subprocess.run([shell, str(WRAPPER), *map(str, args)], env=env, capture_output=True, text=True,
                          start_new_session=True)


def log_lines(tmp_path, name="update.log"):
    return [line.split(" ", 2)[2] for line in (tmp_path / "state" / name).read_text().splitlines()
            if " sstarota-update: " in line]


def test_wrapper_runs_every_step(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    pid = start_fake_app(tmp_path)
    assert alive(pid)
    data = root / "mnt/data"
    env = wrapper_env(tmp_path, root, OTA_STOP_APPS="fakeapp", OTA_UMOUNT=str(data))
    # a real mount point to unmount: a tmpfs in a private mount namespace
    script = 'mount -t tmpfs ota-test "%s" && exec "%s" "%s" "%s"' % (data, tmp_path / "bin" / "sh" if BUSYBOX else "sh",
                                                                     WRAPPER, pkg)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not alive(pid)
    steps = log_lines(tmp_path)
    expected = ["sstarota-update: start", "sstarota-update: package: %s (%d bytes, sha256 %s)"
                % (pkg, os.path.getsize(pkg), sha256(pkg)), "sstarota-update: try 1 of 3",
                "sstarota-update: work directory:", "sstarota-update: stop fakeapp: SIGTERM",
                "sstarota-update: stop fakeapp: stopped", "sstarota-update: unmount %s: done" % data,
                "sstarota-update: install: %s -x" % (tmp_path / "bin" / "otaunpack"),
                "sstarota-update: install: success: 1 record(s) written, 0 already in place",
                "sstarota-update: reboot: %s" % (tmp_path / "bin" / "reboot")]
    for want, got in zip(expected, steps):
        assert got.startswith(want), (want, got)
    assert len(steps) == len(expected), steps
    log = (tmp_path / "state/update.log").read_text()
    assert "ota begin:" in log and "ota end: update installed" in log and "otaunpack: 100% done" in log
    assert (root / "mnt/data/app.conf").read_bytes() == (GOLDEN / "v0.4/in/files/app.conf").read_bytes()
    assert (root / "var/lib/ota/result").read_text().startswith("ok ")
    assert calls(tmp_path, "reboot") == [""]


def test_wrapper_reports_a_rejected_package_and_does_not_reboot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    pkg = update_package(tmp_path)
    raw = bytearray(Path(pkg).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(pkg).write_bytes(bytes(raw))
    proc = boot(tmp_path, wrapper_env(tmp_path, root, OTA_PACKAGES="%s %s" % (tmp_path / "missing.gz", pkg)))
    assert proc.returncode == 3
    steps = log_lines(tmp_path)
    assert steps[1] == "sstarota-update: package: %s (%d bytes, sha256 %s)" % (pkg, len(raw), sha256(pkg))
    assert steps[-1].startswith("sstarota-update: install: package REJECTED, nothing was written (exit 3)")
    assert calls(tmp_path, "on-failure") == ["3"]
    assert calls(tmp_path, "reboot") == []
    assert list(root.iterdir()) == []


def test_wrapper_without_a_package_or_space_gives_up(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    # at a boot without a package there is nothing to do: not a failure
    proc = boot(tmp_path, wrapper_env(tmp_path, root))
    assert proc.returncode == 0 and "no package found" in proc.stdout
    proc = boot(tmp_path, wrapper_env(tmp_path, root), tmp_path / "missing.bin.gz")
    assert proc.returncode == 4 and "does not exist" in proc.stdout
    pkg = update_package(tmp_path)
    proc = boot(tmp_path, wrapper_env(tmp_path, root, OTA_MIN_FREE_KB="999999999999"), pkg)
    assert proc.returncode == 4 and "KiB free in" in proc.stdout
    # OTA_ON_FAILURE runs for a counted try only (at most OTA_MAX_TRIES times a package): not for the missing one
    assert calls(tmp_path, "on-failure") == ["4"]
    assert calls(tmp_path, "otaunpack") == []


@pytest.mark.parametrize("applets", [True, False], ids=["busybox", "host-sh"])
def test_the_same_package_at_three_boots_is_installed_once_and_rebooted_once(tmp_path, applets):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    board_path(tmp_path, applets)  # busybox's sh and applets, or the host's sh (dash) and tools
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    codes = [boot(tmp_path, env).returncode for _ in range(3)]
    assert codes == [0, 0, 0]
    assert len(calls(tmp_path, "otaunpack")) == 1
    assert calls(tmp_path, "reboot") == [""]
    assert (tmp_path / "state/packages" / (sha256(pkg) + ".done")).exists()
    assert not (tmp_path / "state/packages" / (sha256(pkg) + ".tries")).exists()
    already = [line for line in log_lines(tmp_path) if "already installed" in line]
    assert len(already) == 2
    # another package is a new one: installed (once)
    (tmp_path / "new").mkdir()
    pkg2 = update_package(tmp_path / "new", data=b"new content\n")
    env = wrapper_env(tmp_path, root, OTA_PACKAGES="%s %s" % (pkg, pkg2))
    assert [boot(tmp_path, env).returncode for _ in range(2)] == [0, 0]
    assert len(calls(tmp_path, "otaunpack")) == 2 and len(calls(tmp_path, "reboot")) == 2
    assert (root / "mnt/data/app.conf").read_bytes() == b"new content\n"


def status(tmp_path, env):
    """sstarota-update --status: its first three words a line (a date as <date>); it changes nothing."""
    before = sorted(p.name for p in (tmp_path / "state").rglob("*")) if (tmp_path / "state").exists() else None
    r = boot(tmp_path, env, "--status")
    assert r.returncode == 0, r.stderr
    after = sorted(p.name for p in (tmp_path / "state").rglob("*")) if (tmp_path / "state").exists() else None
    assert after == before
    return [[re.sub(r"^\d{4}-\d\d-\d\d$", "<date>", w) for w in line.split()[:3]] for line in r.stdout.splitlines()]


def test_a_failing_package_is_tried_at_most_n_times_then_left_with_its_reason(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 1\n")
    pkg = update_package(tmp_path, begin=failing)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    assert status(tmp_path, env) == [["no", "package", "recorded"]]
    codes = [boot(tmp_path, env).returncode for _ in range(2)]
    assert status(tmp_path, env) == [[sha256(pkg), "tried", "2"]]
    codes += [boot(tmp_path, env).returncode for _ in range(3)]
    assert codes == [1, 1, 1, 5, 5]
    assert status(tmp_path, env) == [[sha256(pkg), "left:", "<date>"]]
    assert len(calls(tmp_path, "otaunpack")) == 3
    assert calls(tmp_path, "on-failure") == ["1", "1", "1"]
    assert calls(tmp_path, "reboot") == []
    left = (tmp_path / "state/packages" / (sha256(pkg) + ".left")).read_text()
    assert "3 tries" in left and "exit 1" in left and "the begin script exited with status 1" in left
    steps = log_lines(tmp_path)
    assert sum("not tried again" in line for line in steps) == 3  # when it is left, and at the two boots after
    # the number of tries is a setting
    (tmp_path / "state/packages" / (sha256(pkg) + ".left")).unlink()
    (tmp_path / "state/packages" / (sha256(pkg) + ".tries")).unlink()
    env["OTA_MAX_TRIES"] = "1"
    assert [boot(tmp_path, env).returncode for _ in range(2)] == [1, 5]
    assert len(calls(tmp_path, "otaunpack")) == 4


def test_an_interrupted_try_counts(tmp_path):
    """A power cut or a crash during the install is a try: a package that brings the board
    down every time is left after OTA_MAX_TRIES boots."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    killer = tmp_path / "killer"
    killer.write_text("#!/bin/sh\nkill -KILL 0\n")  # the whole session: the wrapper too
    os.chmod(killer, 0o755)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg), OTA_MAX_TRIES="2", OTAUNPACK=str(killer))
    assert [boot(tmp_path, env).returncode for _ in range(3)] == [-9, -9, 5]
    left = (tmp_path / "state/packages" / (sha256(pkg) + ".left")).read_text()
    assert "2 tries" in left and "interrupted" in left


def test_nothing_written_means_no_reboot(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    proc = subprocess.run([str(BIN / "otaunpack"), "-x", pkg, "--root", str(root), "-t", str(tmp_path)],
                          capture_output=True)
    assert proc.returncode == 0
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg), OTA_ON_UNCHANGED=str(tmp_path / "bin/on-unchanged"))
    proc = boot(tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(calls(tmp_path, "otaunpack")) == 1
    assert calls(tmp_path, "reboot") == [] and calls(tmp_path, "on-unchanged") == [""]
    assert log_lines(tmp_path)[-2:] == ["sstarota-update: install: success: 0 record(s) written, 1 already in place",
                                        "sstarota-update: nothing was written: no reboot"]
    assert boot(tmp_path, env).returncode == 0 and len(calls(tmp_path, "otaunpack")) == 1


def test_the_log_is_kept_in_the_state_directory_bounded_and_sent_to_syslog(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg), OTA_LOG_MAX_KB="2")
    for _ in range(12):
        assert boot(tmp_path, env).returncode == 0
    state = tmp_path / "state"
    assert sorted(p.name for p in state.iterdir()) == ["otaunpack.lock", "packages", "update.log", "update.log.1"]
    # moved once larger than 2 KiB, before a line is added: at most one line over (the lines name
    # paths under pytest's temporary directory, whose length varies)
    longest = max(len(line) + 1 for name in ("update.log", "update.log.1")
                  for line in (state / name).read_bytes().splitlines())
    assert (state / "update.log").stat().st_size <= 2048 + longest
    assert (state / "update.log.1").stat().st_size <= 2048 + 4096
    assert "already installed" in log_lines(tmp_path)[-1]
    syslog = calls(tmp_path, "logger")
    assert "-t sstarota-update install: success: 1 record(s) written, 0 already in place" in syslog
    assert any(line.startswith("otaunpack: note: summary:") for line in syslog)
    # no syslog: the file alone
    env["OTA_SYSLOG"] = "no"
    before = len(calls(tmp_path, "logger"))
    assert boot(tmp_path, env).returncode == 0
    assert len(calls(tmp_path, "logger")) == before


def test_free_space_is_asked_only_for_what_goes_under_the_work_directory(tmp_path):
    """A local package is read where it is, never copied under -t: a 3 MiB package installs
    with a 2 MiB work directory (otaunpack keeps 1 MiB free there)."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    data = os.urandom(3 << 20)
    pkg = update_package(tmp_path, data=data)
    small = tmp_path / "small"
    small.mkdir()
    env = wrapper_env(tmp_path, root, OTA_WORKDIR=str(small / "ota"), OTA_MIN_FREE_KB="256")
    script = 'mount -t tmpfs -o size=2m ota-work "%s" && exec sh "%s" "%s"' % (small, WRAPPER, pkg)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "mnt/data/app.conf").read_bytes() == data


@pytest.mark.parametrize("case", ["other-user", "symlink", "group-writable", "symlink-with-slash", "parent-other-user",
                                  "state-other-user"])
def test_a_work_or_state_directory_not_private_to_us_is_never_used(tmp_path, case):
    """A work directory someone else made first is left alone, and a fresh one of ours made
    beside it (refusing would let any local user block every update); a parent directory or a
    state directory of another user's is refused."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg), OTA_WORKDIR=str(tmp_path / "tmp/ota"))
    (tmp_path / "tmp").mkdir(mode=0o1777)
    os.chmod(tmp_path / "tmp", 0o1777)
    work = tmp_path / "tmp/ota"
    if case == "other-user":  # /tmp/ota made by someone else before us
        work.mkdir()
        os.chown(work, 65534, 65534)
    elif case == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        work.symlink_to(tmp_path / "elsewhere")
    elif case == "group-writable":
        work.mkdir()
        os.chmod(work, 0o770)
    elif case == "symlink-with-slash":  # "ota/" is the directory the link points to: theirs to move
        (tmp_path / "private").mkdir(mode=0o700)
        work.symlink_to(tmp_path / "private")
        os.lchown(work, 65534, 65534)
        env["OTA_WORKDIR"] = str(work) + "/"
    elif case == "parent-other-user":  # they can rename our directory away and put theirs in its place
        (tmp_path / "theirs").mkdir()
        os.chown(tmp_path / "theirs", 65534, 65534)
        env["OTA_WORKDIR"] = str(tmp_path / "theirs/ota")
    else:
        (tmp_path / "state").mkdir()
        os.chown(tmp_path / "state", 65534, 65534)
    before = sorted((p.name, p.lstat().st_uid, p.lstat().st_mode) for p in (tmp_path / "tmp").iterdir())
    proc = boot(tmp_path, env)
    if case in ("parent-other-user", "state-other-user"):
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert calls(tmp_path, "otaunpack") == [] and calls(tmp_path, "reboot") == []
        assert not (root / "mnt/data/app.conf").exists()
        assert "owned by uid 65534" in proc.stdout
        # a try that cannot be recorded is not one: no OTA_ON_FAILURE (if it reboots, it would at every boot)
        assert calls(tmp_path, "on-failure") == ([] if case == "state-other-user" else ["4"])
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "mnt/data/app.conf").exists() and len(calls(tmp_path, "reboot")) == 1
    mode, _, uid = calls(tmp_path, "workdir")[0].split()[:3]
    assert mode.startswith("drwx------") and int(uid) == os.geteuid()
    assert calls(tmp_path, "otaunpack")[0].split()[3].startswith(str(work) + ".")
    # theirs untouched, ours gone
    assert sorted((p.name, p.lstat().st_uid, p.lstat().st_mode) for p in (tmp_path / "tmp").iterdir()) == before


def test_the_work_directory_is_made_private_and_fresh(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    assert boot(tmp_path, env).returncode == 0
    mode, _, uid = calls(tmp_path, "workdir")[0].split()[:3]
    assert mode.startswith("drwx------") and int(uid) == os.geteuid()
    assert not (tmp_path / "work").exists()  # removed after the run: the next one makes it again
    state = tmp_path / "state"
    assert (state.stat().st_mode & 0o777, (state / "packages").stat().st_mode & 0o777) == (0o700, 0o700)


@pytest.mark.parametrize("status", [0, -1])
def test_example_end_script_acts_on_ota_status(tmp_path, status):
    root = tmp_path / "root"
    root.mkdir()
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 1\n")
    pkg = update_package(tmp_path, begin=failing if status else None)
    for attempt in (1, 2):
        proc = subprocess.run([str(BIN / "otaunpack"), "-x", pkg, "--root", str(root), "-t", str(tmp_path)],
                              capture_output=True, text=True)
        assert proc.returncode == (0 if status == 0 else 1)
        assert "OTA UPDATA STATUS: %d" % status in proc.stdout
    result = (root / "var/lib/ota/result").read_text()
    if status == 0:
        assert result.startswith("ok ") and not (root / "var/lib/ota/failures").exists()
        assert "ota end: update installed" in proc.stdout
    else:
        assert result.startswith("failed ")
        assert (root / "var/lib/ota/failures").read_text() == "x\nx\n"
        assert "update FAILED (OTA_STATUS=-1); 2 failure(s) so far" in proc.stdout


def install_final_event(pkg, root, tmp_path):
    """otaunpack's last JSON progress event for an install of pkg under root."""
    proc, events = otaunpack_events(tmp_path / "events.jsonl", "-x", pkg, "--root", root, "-t", tmp_path, "-q",
                                    console=True)
    assert proc.returncode == 0, proc.stderr
    return events[-1]


def test_the_final_progress_event_counts_what_was_written(tmp_path):
    """The wrapper's reboot decision: the records written and found in place, in the final event."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    first = install_final_event(pkg, root, tmp_path)
    reads = first["summary"].pop("package_reads")  # 1 with -t in RAM (the spool); else verify, scripts, apply
    assert first["final"] and first["summary"] == {"records": 1, "written": 1, "in_place": 0, "files": 1,
                                                   "flash_blocks": 0, "volumes": 0, "device_bytes": 0}
    assert reads in (1, 3)
    again = install_final_event(pkg, root, tmp_path)
    assert again["summary"]["written"] == 0 and again["summary"]["in_place"] == 1 and again["summary"]["files"] == 0


def test_a_package_of_another_user_is_not_installed(tmp_path):
    """Any local user can write /tmp/SStarOta.bin.gz: its begin script would run as root."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    os.chown(pkg, 65534, 65534)
    proc = boot(tmp_path, wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg)))
    assert proc.returncode == 0 and "owned by uid 65534" in proc.stdout
    assert boot(tmp_path, wrapper_env(tmp_path, root), pkg).returncode == 4
    assert calls(tmp_path, "otaunpack") == [] and not (root / "mnt/data/app.conf").exists()
    # the board's own user and root are trusted, and OTA_TRUST_UIDS adds others (an SD card mounted uid=1000)
    assert boot(tmp_path, wrapper_env(tmp_path, root, OTA_TRUST_UIDS="65534"), pkg).returncode == 0
    assert len(calls(tmp_path, "otaunpack")) == 1


def test_only_the_wrapper_s_own_lines_count_as_tries(tmp_path):
    """A reason quotes otaunpack's error, which may quote the package's text: it is never read as a try."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    (tmp_path / "state/packages").mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "state", 0o700)
    tries = tmp_path / "state/packages" / (sha256(pkg) + ".tries")
    tries.write_text("2026-01-01 00:00:00 try 1: started (%s)\n"
                     "2026-01-01 00:00:01 try 1: exit 3: otaunpack: error: record 1: /x: started (y)\n" % pkg)
    proc = boot(tmp_path, wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg)))
    assert proc.returncode == 0, proc.stdout
    assert "sstarota-update: try 2 of 3 (sha256 %s)" % sha256(pkg) in log_lines(tmp_path)


def test_the_example_config_is_shell_and_sets_only_the_wrapper_s_settings():
    conf = EXAMPLES / "sstarota-update.conf"
    shell = BUSYBOX and [BUSYBOX, "sh"] or ["sh"]
    assert subprocess.run(shell + ["-n", str(conf)]).returncode == 0
    names = re.findall(r"^([A-Z_]+)=", conf.read_text(), re.M)
    header = WRAPPER.read_text().split("\n\n")[0]
    assert names and all(re.search(r"^#   %s " % name, header, re.M) for name in names), names


def test_one_wrapper_at_a_time(tmp_path):
    """A second run while one is installing (a boot script and an application's update at once)
    does not start; a lock left by a run that a power cut or a kill ended does not block."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    lock = tmp_path / "state/lock"
    lock.mkdir(parents=True)
    for d in (tmp_path / "state", lock):
        os.chmod(d, 0o700)
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    other = subprocess.Popen(["sh", "-c", "sleep 600", "sstarota-update"])  # a run of this boot
    try:
        (lock / "owner").write_text("%s %d\n" % (boot_id, other.pid))
        proc = boot(tmp_path, env)
        assert proc.returncode == 4 and "another sstarota-update (pid %d) is running" % other.pid in proc.stdout
        assert calls(tmp_path, "otaunpack") == [] and calls(tmp_path, "on-failure") == []
        (lock / "owner").write_text("%s %d\n" % (boot_id, os.getpid()))  # its pid now another program's
        assert boot(tmp_path, env).returncode == 0
        assert len(calls(tmp_path, "otaunpack")) == 1 and not lock.exists()
    finally:
        other.kill()
        other.wait()
    lock.mkdir(mode=0o700)
    (lock / "owner").write_text("another-boot %d\n" % os.getpid())  # left by the boot before
    assert boot(tmp_path, env).returncode == 0 and not lock.exists()
    assert sum("taken over" in line for line in log_lines(tmp_path)) == 2


def test_the_state_directory_is_the_board_s_as_otaunpack_takes_it(tmp_path):
    """OTA_STATE_DIR, else the board config's state_dir, else otaunpack's default
    /var/lib/sstarota (all inside OTA_ROOT): the wrapper's records beside otaunpack's journal."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = update_package(tmp_path)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    del env["OTA_STATE_DIR"]
    assert boot(tmp_path, env).returncode == 0
    assert (root / "var/lib/sstarota/packages" / (sha256(pkg) + ".done")).exists()
    assert "--state-dir %s/var/lib/sstarota " % root in calls(tmp_path, "otaunpack")[0] + " "
    (root / "etc/sstarota").mkdir(parents=True)
    (root / "etc/sstarota/board.conf").write_text("compatible = cam1\nstate_dir = /data/ota-state  # persistent\n")
    assert boot(tmp_path, env).returncode == 0 and len(calls(tmp_path, "otaunpack")) == 2
    assert (root / "data/ota-state/packages" / (sha256(pkg) + ".done")).exists()


@pytest.mark.parametrize("status,rebooted", [(0, True), (0, False), (-1, True)])
def test_an_end_script_that_reboots_the_board_ends_the_try_as_its_status_says(tmp_path, status, rebooted):
    """Vendor end scripts often reboot the board themselves: the try is cut short after the
    install succeeded (or failed). The next boot reads the end script's status line in the
    log: a success is recorded as installed, not installed again and again until it is left."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    end = tmp_path / "end.sh"
    end.write_text("kill -KILL 0\n")  # the board goes down: the wrapper with it
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 1\n")
    pkg = update_package(tmp_path, end=end, begin=failing if status else None)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg))
    assert boot(tmp_path, env).returncode == -9
    tries = tmp_path / "state/packages" / (sha256(pkg) + ".tries")
    if rebooted:  # the boot the try started in is over
        tries.write_text(re.sub(r" in boot \S+$", " in boot 0000-another-boot", tries.read_text()))
    proc = boot(tmp_path, env)
    assert len(calls(tmp_path, "otaunpack")) == (1 if status == 0 else 2)
    if status == 0:
        assert proc.returncode == 0, proc.stdout
        assert (tmp_path / "state/packages" / (sha256(pkg) + ".done")).exists()
        assert "end script ran with OTA_STATUS=0" in proc.stdout
        assert boot(tmp_path, env).returncode == 0 and len(calls(tmp_path, "otaunpack")) == 1
    else:  # a failed try, counted as such
        assert proc.returncode == -9
        assert "try 1: failed: its end script ran with OTA_STATUS=-1" in tries.read_text()
    # the new system runs once the board has rebooted since the install
    assert calls(tmp_path, "reboot") == ([] if rebooted or status else [""])


def test_a_package_swapped_after_it_was_checked_is_not_what_gets_installed(tmp_path):
    """The wrapper opens the package once; its owner, its digest and otaunpack all read that
    open file, whatever the name points at since (a card anyone can write)."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    bindir = board_path(tmp_path)
    pkg = update_package(tmp_path)
    (tmp_path / "evil").mkdir()
    evil = update_package(tmp_path / "evil", data=b"evil\n")
    swap = bindir / "swap-then-otaunpack"
    swap.write_text('#!/bin/sh\nmv -f "%s" "%s"\nexec "%s" "$@"\n' % (evil, pkg, bindir / "otaunpack"))
    os.chmod(swap, 0o755)
    want = sha256(pkg)
    env = wrapper_env(tmp_path, root, OTA_PACKAGES=str(pkg), OTAUNPACK=str(swap))
    assert boot(tmp_path, env).returncode == 0
    assert (root / "mnt/data/app.conf").read_bytes() == (GOLDEN / "v0.4/in/files/app.conf").read_bytes()
    assert (tmp_path / "state/packages" / (want + ".done")).exists()
