"""Scripts, failures mid-way, dry runs, stdin, masks, modes: the installer's contract."""

import gzip
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota.fsutil import ram_fs
from support import GOLDEN, copy_inputs, files_of, final_event, otaunpack, otaunpack_events

PROJECT = Path(__file__).parent.parent


@pytest.fixture
def inp(tmp_path):
    d = copy_inputs("v0.4", tmp_path / "in")
    (d / "end-log.sh").write_text('echo "status=$OTA_STATUS root=$OTA_ROOT pwd=$(pwd)" > "$OTA_ROOT/end.log"\n')
    (d / "fail.sh").write_text('touch "$OTA_ROOT/begin-ran"; exit 7\n')
    return d


def pack_records(cli, pkg, inp, begin=None, end="end-log.sh", records=()):
    argv = ["-c", pkg] + (["-b", inp / begin] if begin else []) + (["-e", inp / end] if end else [])
    assert cli.otapack(*argv)[0] == 0
    for rec in records:
        code, out, err = cli.otapack("-a", pkg, *rec)
        assert code == 0, err
    return pkg


def test_failing_begin_script_writes_nothing_and_runs_end_script(cli, inp, tmp_path):
    pkg = pack_records(cli, tmp_path / "p.bin", inp, begin="fail.sh",
               records=[("-s", inp / "files/app.conf", "-d", "/config/app.conf", "--file-update")])
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 1
    assert "begin script exited with status 7; nothing was written" in proc.stderr.splitlines()[-1]
    assert sorted(os.listdir(root)) == ["begin-ran", "end.log"]
    assert (root / "end.log").read_text().startswith("status=-1 ")


def test_write_failing_midway_names_the_record_and_leaves_no_half_file(cli, inp, tmp_path):
    pkg = pack_records(cli, tmp_path / "p.bin", inp, records=[
        ("-s", inp / "files/app.conf", "-d", "/config/app.conf", "--file-update"),
        ("-s", inp / "images/kernel", "-d", "/ro/kernel.img", "--file-update"),
        ("-s", inp / "files/new.bin", "-d", "/config/new.bin", "--file-add"),
    ])
    root = tmp_path / "root"
    (root / "ro").mkdir(parents=True)
    (root / "ro" / "kernel.img").write_bytes(b"old kernel")
    # a read-only directory that even root cannot write: a read-only bind mount in a private namespace
    script = "mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec \"$@\"".format(ro=root / "ro")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m",
                           "sstarota.cli.otaunpack", "-r", str(pkg), "--root", str(root)],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert "record 2/3 (file-update /ro/kernel.img)" in last and "Read-only file system" in last
    assert (root / "ro" / "kernel.img").read_bytes() == b"old kernel"
    assert os.listdir(root / "ro") == ["kernel.img"]
    files = files_of(root)
    assert files["config/app.conf"] == (inp / "files/app.conf").read_bytes()  # record 1 went in before
    assert "config/new.bin" not in files  # record 3 was never started
    assert files["end.log"].startswith(b"status=-1 ")
    assert not [n for n in os.listdir(root / "config") if n.startswith(".")]


def test_mode_zero_keeps_the_existing_mode_and_new_files_get_0644(cli, inp, tmp_path):
    pkg = pack_records(cli, tmp_path / "p.bin", inp, end=None, records=[
        ("-s", inp / "files/app.conf", "-d", "/config/app.conf", "--file-update"),
        ("-s", inp / "files/app.conf", "-d", "/config/fresh.conf", "--file-update"),
        ("-s", inp / "files/app.conf", "-d", "/config/exec.conf", "-m", "0x1ed", "--file-update"),
    ])
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    (root / "config" / "app.conf").write_text("old")
    os.chmod(root / "config" / "app.conf", 0o600)
    assert otaunpack("-r", pkg, "--root", root).returncode == 0
    def mode(n):
        return stat.S_IMODE(os.stat(root / "config" / n).st_mode)
    assert (mode("app.conf"), mode("fresh.conf"), mode("exec.conf")) == (0o600, 0o644, 0o755)


def test_dry_run_prints_the_plan_and_writes_nothing(inp, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", GOLDEN / "v1.6/p5.bin", "--root", root, "--dry-run", "-q")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("package ") and "1.6, 2 record(s)" in lines[0]
    assert "1/2 block       /dev/mtd3 -> %s/dev/mtd3, 101305 bytes" % os.path.realpath(root) in lines[1]
    assert lines[2].endswith("(mask 0: skipped)")
    assert list(root.iterdir()) == []
    bad = tmp_path / "bad.bin"
    raw = bytearray((GOLDEN / "v1.6/p5.bin").read_bytes())
    raw[-1] ^= 1
    bad.write_bytes(bytes(raw))
    assert otaunpack("-r", bad, "--root", root, "--dry-run").returncode == 3


def test_stdin_is_spooled_under_t_and_installs(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    raw = (GOLDEN / "v0.4/p2.bin.gz").read_bytes()
    spool = tmp_path / "spool"
    spool.mkdir()
    for flag, data in (("-x", raw), ("-r", (GOLDEN / "v0.4/p2.bin").read_bytes())):
        proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", flag, "-", "-t", str(spool),
                               "--root", str(root)], input=data, capture_output=True, cwd=PROJECT)
        assert proc.returncode == 0, proc.stderr
        assert (root / "dev/mtdblock0").read_bytes() == (GOLDEN / "v0.4/in/images/ipl_s.bin").read_bytes()
        assert list(spool.iterdir()) == []


def test_no_scripts_and_script_environment(cli, inp, tmp_path):
    (inp / "rec.sh").write_text('echo "rec root=$OTA_ROOT pwd=$(pwd)" > "$OTA_ROOT/rec.log"\n')
    pkg = pack_records(cli, tmp_path / "p.bin", inp, records=[("-s", inp / "rec.sh", "-d", "rec.sh", "--script-add")])
    root = tmp_path / "root"
    root.mkdir()
    assert otaunpack("-r", pkg, "--root", root, "--no-scripts").returncode == 0
    assert list(root.iterdir()) == []
    assert otaunpack("-r", pkg, "--root", root).returncode == 0
    real = os.path.realpath(root)
    assert (root / "rec.log").read_text() == "rec root=%s pwd=%s\n" % (real, real)
    assert (root / "end.log").read_text() == "status=0 root=%s pwd=%s\n" % (real, real)


def test_failing_script_record_fails_the_update(cli, inp, tmp_path):
    pkg = pack_records(cli, tmp_path / "p.bin", inp, records=[("-s", inp / "fail.sh", "-d", "fail.sh", "--script-add"),
                                                      ("-d", "/config/x", "--file-delete")])
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 1
    assert "script fail.sh exited with status 7" in proc.stderr.splitlines()[-1]
    assert (root / "end.log").read_text().startswith("status=-1")


def test_diff_against_a_missing_or_wrong_file_fails_cleanly(cli, inp, tmp_path):
    pkg = pack_records(cli, tmp_path / "p.bin", inp, end=None, records=[
        ("-o", inp / "old/changed.bin", "-n", inp / "new/changed.bin", "-d", "/c/changed.bin", "--file-update-diff")])
    root = tmp_path / "root"
    (root / "c").mkdir(parents=True)
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path)
    # found in the verify pass: rejected before anything runs or is written
    assert proc.returncode == 3 and "does not exist" in proc.stderr.splitlines()[-1]
    assert os.listdir(root / "c") == []


def test_text_progress_lines_and_help(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-x", GOLDEN / "v0.4/p2.bin.gz", "--root", root)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("otaunpack: ")]
    assert lines[0] == "otaunpack:   0% start"
    assert any(line.endswith("% verifying 1/1 /dev/mtdblock0") for line in lines)
    assert any(line.endswith("% updating 1/1 /dev/mtdblock0") for line in lines)
    assert lines[-1] == "otaunpack: 100% done"
    proc = otaunpack("--help")
    assert proc.returncode == 0 and "3  the package was rejected" in proc.stdout
    proc = otaunpack("-r", tmp_path / "missing.bin")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


# ---------------------------------------------------------------------------- one inflate (issue 25)
# A gzip package is inflated once where -t is in RAM (a board's /tmp) and has room: the verify
# pass spools what it inflates and the later passes (scripts, apply) read the spool. The final
# event counts the reads of the package; a spool that cannot take a write falls back to
# reading the package again; a -t on storage is not written with a copy of the package.

def _two_files_package(cli, inp, tmp_path, size=256 << 10):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(os.urandom(size))
    b.write_bytes(os.urandom(size))
    pkg = pack_records(cli, tmp_path / "p.bin", inp, begin="begin.sh",
                       records=[("-s", a, "-d", "/data/a.bin", "--file-update"),
                                ("-s", b, "-d", "/data/b.bin", "--file-update")])
    subprocess.run(["gzip", "-6", pkg], check=True)
    return Path(str(pkg) + ".gz"), a.read_bytes(), b.read_bytes()


def _install_events(pkg, root, work, *extra, **kw):
    """Install pkg under root with -t work: (the process, its final progress event)."""
    work.mkdir(exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    proc, events = otaunpack_events(root.parent / "events", "-x", pkg, "--root", root, "-t", work, *extra, **kw)
    return proc, events[-1]


@pytest.mark.parametrize("two_pass", [False, True], ids=["spooled", "two-pass"])
def test_a_gzip_package_is_inflated_once_where_the_work_directory_is_in_ram(cli, inp, tmp_path, ram_dir, two_pass):
    pkg, a, b = _two_files_package(cli, inp, tmp_path)
    root = tmp_path / "root"
    proc, final = _install_events(pkg, root, ram_dir, *(["--two-pass"] if two_pass else []))
    assert proc.returncode == 0, proc.stderr
    # verify, then the scripts' read and the apply pass: one read when spooled, three when not
    assert final["reason"] == "ok" and final["summary"]["package_reads"] == (3 if two_pass else 1)
    assert final["summary"]["written"] == 2
    assert (root / "data/a.bin").read_bytes() == a and (root / "data/b.bin").read_bytes() == b
    assert os.listdir(ram_dir) == []  # the spool went with the private work directory


def test_a_work_directory_on_storage_gets_no_copy_of_the_package(cli, inp, tmp_path):
    """A spool on flash would wear it and cost more than a second inflate: read twice there."""
    pkg, a, b = _two_files_package(cli, inp, tmp_path)
    root, work = tmp_path / "root", tmp_path / "work"
    proc, final = _install_events(pkg, root, work)
    assert proc.returncode == 0, proc.stderr
    assert final["summary"]["package_reads"] == (1 if ram_fs(str(tmp_path)) else 3)
    assert (root / "data/a.bin").read_bytes() == a and (root / "data/b.bin").read_bytes() == b


def test_a_spool_that_fills_its_filesystem_falls_back_to_reading_the_package_again(cli, inp, tmp_path, ram_dir):
    """RLIMIT_FSIZE stands for a full -t: the spool's write past it fails (EFBIG) half-way
    through the verify pass, which had given up the package's block chain for the spool: it is
    read again (a fourth read, after the scripts' and the apply pass's), and the install
    goes on from the package."""
    pkg, a, b = _two_files_package(cli, inp, tmp_path)
    root = tmp_path / "root"
    limit = len(a) + (len(a) >> 1)  # the targets (one file each) fit, the whole package does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc, final = _install_events(pkg, root, ram_dir, preexec_fn=small_files)
    assert proc.returncode == 0, proc.stderr
    assert final["summary"]["package_reads"] == 4 and final["summary"]["written"] == 2
    assert (root / "data/a.bin").read_bytes() == a and (root / "data/b.bin").read_bytes() == b
    assert os.listdir(ram_dir) == []


def test_a_corrupt_package_leaves_no_spool(cli, inp, tmp_path, ram_dir):
    pkg, a, _ = _two_files_package(cli, inp, tmp_path)
    raw = bytearray(gzip.decompress(pkg.read_bytes()))
    at = bytes(raw).index(a[:64]) + 1000
    raw[at] ^= 0xFF  # record 1's data: its checksum fails, after the spool began
    bad = tmp_path / "bad.bin.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    root = tmp_path / "root"
    proc, final = _install_events(bad, root, ram_dir)
    assert proc.returncode == 3 and final["reason"] == "rejected"
    assert os.listdir(ram_dir) == [] and files_of(root) == {}


def test_a_spool_that_leaves_no_room_for_the_work_files_is_dropped_not_the_package(cli, inp, tmp_path):
    """-t a 12 MiB tmpfs: the 6.5 MiB inflated package fits (with its 4 MiB spare), but then
    the 5 MiB script record it must spool there does not: the spool goes, the package is
    verified again without it, and the install succeeds (a refusal would be the same at every
    try, though the package fits a board that reads it twice)."""
    script = tmp_path / "big.sh"
    script.write_bytes(b"echo ran > \"$OTA_ROOT/script-ran\"\n" + (b"#" * 1023 + b"\n") * (5 << 10))
    data = tmp_path / "d.bin"
    data.write_bytes(os.urandom(3 << 19))
    pkg = pack_records(cli, tmp_path / "p.bin", inp, end=None, records=[
        ("-s", script, "-d", "big.sh", "--script-add"), ("-s", data, "-d", "/data/d.bin", "--file-update")])
    subprocess.run(["gzip", "-1", pkg], check=True)
    root, work = tmp_path / "root", tmp_path / "work"
    (root / "data").mkdir(parents=True)
    work.mkdir()
    events = tmp_path / "events"
    sh = ('mount -t tmpfs -o size=12m ota-work "$1" && shift && exec "$@" --progress-fd 3 3>"%s"' % events)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", sh, "sh", str(work), sys.executable, "-m",
                           "sstarota.cli.otaunpack", "-x", str(pkg) + ".gz", "--root", str(root), "-t", str(work)],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    final = final_event(events)
    # verify with the spool, verify again without it, the apply pass
    assert final["reason"] == "ok" and final["summary"]["package_reads"] == 3
    assert (root / "script-ran").read_text() == "ran\n" and (root / "data/d.bin").read_bytes() == data.read_bytes()
