"""What goes onto the board: the update wrapper and the example begin/end scripts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import packer

from helpers import GOLDEN

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


def package(tmp_path, begin=None):
    pkg = tmp_path / "SStarOta.bin"
    packer.create(str(pkg), begin=str(begin or EXAMPLES / "begin.sh"), end=str(EXAMPLES / "end.sh"))
    packer.append(str(pkg), packer.operation_specs("file-update", src=str(GOLDEN / "v0.4/in/files/app.conf"),
                                               dst="/mnt/data/app.conf", mode=0o644))
    return packer.gzip_package(str(pkg))


def wrapper_env(tmp_path, root, **extra):
    env = dict(os.environ, OTA_WORKDIR=str(tmp_path / "work"), OTA_ROOT=str(root), OTA_LOG=str(tmp_path / "ota.log"),
               OTA_REBOOT="touch %s" % (tmp_path / "rebooted"), OTAUNPACK=str(BIN / "otaunpack"),
               OTA_ON_FAILURE="%s %s" % (PROJECT / "tests" / "record-failure.sh", tmp_path / "failure"),
               OTA_PACKAGES=str(tmp_path / "nowhere.bin.gz"))
    env.update(extra)
    return env


def log_lines(tmp_path):
    return [line.split(" ", 2)[2] for line in (tmp_path / "ota.log").read_text().splitlines()
            if " sstarota-update: " in line]


def test_wrapper_runs_every_step(tmp_path):
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = package(tmp_path)
    pid = start_fake_app(tmp_path)
    assert alive(pid)
    data = root / "mnt/data"
    # a real mount point to unmount: a tmpfs in a private mount namespace
    script = 'mount -t tmpfs ota-test "%s" && exec sh "%s" "%s"' % (data, WRAPPER, pkg)
    env = wrapper_env(tmp_path, root, OTA_STOP_APPS="fakeapp", OTA_UMOUNT=str(data))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not alive(pid)
    steps = log_lines(tmp_path)
    expected = ["sstarota-update: start", "sstarota-update: package: %s" % pkg, "sstarota-update: work directory:",
                "sstarota-update: stop fakeapp: SIGTERM", "sstarota-update: stop fakeapp: stopped",
                "sstarota-update: unmount %s: done" % data, "sstarota-update: install: %s -x" % (BIN / "otaunpack"),
                "sstarota-update: install: success", "sstarota-update: reboot:"]
    for want, got in zip(expected, steps):
        assert got.startswith(want), (want, got)
    assert len(steps) == len(expected)
    log = (tmp_path / "ota.log").read_text()
    assert "ota begin:" in log and "ota end: update installed" in log and "otaunpack: 100% done" in log
    assert (root / "mnt/data/app.conf").read_bytes() == (GOLDEN / "v0.4/in/files/app.conf").read_bytes()
    assert (root / "var/lib/ota/result").read_text().startswith("ok ")
    assert (tmp_path / "rebooted").exists()


def test_wrapper_reports_a_rejected_package_and_does_not_reboot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    pkg = package(tmp_path)
    raw = bytearray(Path(pkg).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(pkg).write_bytes(bytes(raw))
    env = wrapper_env(tmp_path, root, OTA_PACKAGES="%s %s" % (tmp_path / "missing.gz", pkg))
    proc = subprocess.run(["sh", str(WRAPPER)], env=env, capture_output=True, text=True)
    assert proc.returncode == 3
    steps = log_lines(tmp_path)
    assert steps[1] == "sstarota-update: package: %s (%d bytes)" % (pkg, len(raw))
    assert steps[-1] == "sstarota-update: install: package REJECTED, nothing was written (exit 3)"
    assert (tmp_path / "failure").read_text() == "3\n"
    assert not (tmp_path / "rebooted").exists()
    assert list(root.iterdir()) == []


def test_wrapper_without_a_package_or_space_gives_up(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run(["sh", str(WRAPPER)], env=wrapper_env(tmp_path, root), capture_output=True, text=True)
    assert proc.returncode == 4
    assert "no package found" in proc.stdout
    pkg = package(tmp_path)
    proc = subprocess.run(["sh", str(WRAPPER), pkg], env=wrapper_env(tmp_path, root, OTA_MIN_FREE_KB="999999999999"),
                          capture_output=True, text=True)
    assert proc.returncode == 4 and "KiB free in" in proc.stdout
    assert (tmp_path / "failure").read_text() == "4\n"


@pytest.mark.parametrize("status", [0, -1])
def test_example_end_script_acts_on_ota_status(tmp_path, status):
    root = tmp_path / "root"
    root.mkdir()
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 1\n")
    pkg = package(tmp_path, begin=failing if status else None)
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


def final_event(pkg, root, tmp_path):
    """otaunpack's last JSON progress event for an install of pkg under root."""
    events = tmp_path / "events.jsonl"
    with open(events, "w") as f:
        proc = subprocess.run([str(BIN / "otaunpack"), "-x", pkg, "--root", str(root), "-t", str(tmp_path), "-q",
                               "--progress-fd", str(f.fileno())], pass_fds=(f.fileno(),), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(events.read_text().splitlines()[-1])


def test_the_final_progress_event_counts_what_was_written(tmp_path):
    """The wrapper's reboot decision: the records written and found in place, in the final event."""
    root = tmp_path / "root"
    (root / "mnt/data").mkdir(parents=True)
    pkg = package(tmp_path)
    first = final_event(pkg, root, tmp_path)
    assert first["final"] and first["summary"] == {"records": 1, "written": 1, "in_place": 0, "files": 1,
                                                   "flash_blocks": 0, "volumes": 0, "device_bytes": 0}
    again = final_event(pkg, root, tmp_path)
    assert again["summary"]["written"] == 0 and again["summary"]["in_place"] == 1 and again["summary"]["files"] == 0
