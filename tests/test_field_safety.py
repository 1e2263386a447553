"""Field safety, round three (issue 20): what the board opens before a signature vouches for
it, the work and state directories another local user could reach, the state directory's
failures, and the installer's one-line messages."""

import os

import pytest

from sstarota import install, signing
from sstarota.errors import PackageError
from sstarota.install.policy import Policy
from support import OP_ADD, OP_UPDATE, PROJECT, one_line, otaunpack, pkg04, rec04, run_hooked, snapshot


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("key")
    signing.generate(str(d / "k"), "p256")
    return str(d / "k")


def test_a_keyed_board_opens_no_target_of_an_unsigned_package(tmp_path, key, monkeypatch):
    """Opening a device node can act (/dev/watchdog arms): nothing the package names is
    opened before its signature is checked."""
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/watchdog-dir/watchdog", OP_UPDATE, b"x" * 100)]))
    root = tmp_path / "root"
    (root / "watchdog-dir").mkdir(parents=True)
    (root / "watchdog-dir/watchdog").write_bytes(b"old")
    opened = []
    real = os.open

    def spy(path, *a, **kw):
        opened.append(os.fsdecode(path))
        return real(path, *a, **kw)

    source = install.open_source(str(pkg), gz=False)
    monkeypatch.setattr(os, "open", spy)
    try:
        with pytest.raises(PackageError) as exc:
            install.Installer(source, install.Options(root=str(root), tmpdir=str(tmp_path),
                                                      policy=Policy(key_paths=[key + ".pub"]))).run()
    finally:
        monkeypatch.undo()
        source.close()
    assert "unsigned" in str(exc.value)
    assert not [p for p in opened if "watchdog" in p], opened


# ---------------------------------------------------------------------------- work and state directories


def _file_pkg(tmp_path, data=b"new\n", dst="/etc/app.conf"):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04(dst, OP_UPDATE, data)]))
    return pkg


def _root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/app.conf").write_bytes(b"old\n")
    return root


def test_a_work_directory_others_can_change_is_refused(tmp_path):
    work = tmp_path / "ota"
    work.mkdir()
    work.chmod(0o777)  # pre-created by another user, not sticky: they could swap our spool
    root = _root(tmp_path)
    before = snapshot(root)
    proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", work, text=False)
    assert proc.returncode == 2, proc.stderr
    assert "-t %s" % work in one_line(proc)
    assert snapshot(root) == before and os.listdir(work) == []


def test_a_state_directory_another_user_made_first_blocks_nothing(tmp_path):
    work = tmp_path / "tmp"
    (work / "sstarota-state").mkdir(parents=True)
    (work / "sstarota-state").chmod(0o777)
    root = _root(tmp_path)
    proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", work, text=False)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/app.conf").read_bytes() == b"new\n"
    assert os.listdir(work) == ["sstarota-state"]  # the run's private work directory is gone


def test_work_files_are_private_to_the_run(tmp_path):
    """Every work file (the package spooled from stdin, the scripts) is in a 0700 directory of
    the run's own, each 0600, removed at the end."""
    import subprocess
    import sys


    work = tmp_path / "tmp"
    work.mkdir()
    root = _root(tmp_path)
    seen = tmp_path / "seen"
    begin = b'for f in "$OTA_WORK_SEEN"/*/*; do stat -c "%%a %%n" "$(dirname "$f")" "$f"; done > %s\n' % bytes(seen)
    pkg = pkg04([rec04("/etc/app.conf", OP_UPDATE, b"new\n")], begin=begin.replace(b"$OTA_WORK_SEEN", bytes(work)))
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", "-", "--root", str(root), "-t",
                           str(work)], input=pkg, capture_output=True, cwd=PROJECT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = seen.read_text().split()
    modes = dict(zip(lines[1::2], lines[0::2]))
    dirs = {p for p in modes if p.endswith("-work")}
    assert len(dirs) == 1 and all(modes[d] == "700" for d in dirs), modes
    files = [p for p in modes if p not in dirs]
    assert files and all(modes[f] == "600" for f in files), modes
    assert os.listdir(work) == []


def test_two_installs_on_one_state_directory_are_not_interleaved(tmp_path):
    import fcntl

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    root = _root(tmp_path)
    before = snapshot(root)
    fd = os.open(state / "otaunpack.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another install holds it
        proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", tmp_path, "--state-dir", state, text=False)
    finally:
        os.close(fd)
    assert proc.returncode == 2, proc.stderr
    assert str(state) in one_line(proc)
    assert snapshot(root) == before
    assert otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", tmp_path, "--state-dir", state,
                     text=False).returncode == 0


def test_a_state_directory_that_cannot_be_changed_does_not_stop_a_package_that_needs_none(tmp_path):
    """A filesystem gone read-only, or a journal that is not a file: one note, not a traceback,
    for a package that needs no journal."""
    state = tmp_path / "state"
    (state / "journal").mkdir(parents=True)
    state.chmod(0o700)
    root = _root(tmp_path)
    proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", tmp_path, "--state-dir", state, text=False)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert (root / "etc/app.conf").read_bytes() == b"new\n"


def test_stdin_needs_no_t(tmp_path):
    import subprocess
    import sys


    root = _root(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", "-", "--root", str(root)],
                          input=_file_pkg(tmp_path).read_bytes(), capture_output=True, cwd=PROJECT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/app.conf").read_bytes() == b"new\n"


def test_a_partition_delta_to_a_name_that_is_not_utf8_installs(tmp_path):
    import bsdiff4

    old, new = os.urandom(5000) * 4, None
    new = old[:7000] + b"changed" * 100 + old[7700:]
    name = b"/dev/mtd\xff"
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "mtd\udcff").write_bytes(old)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04(name, 5, bsdiff4.diff(old, new))]))
    for _ in range(2):  # and again: in place by the ledger
        proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
        assert proc.returncode == 0, proc.stderr
        assert (root / "dev" / "mtd\udcff").read_bytes() == new


def test_a_work_directory_without_room_for_a_delta_is_found_before_writing(tmp_path, monkeypatch):
    import bsdiff4

    old = os.urandom(300000)
    new = old[:1000] + os.urandom(200000) + old[201000:]
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev/mtd3").write_bytes(old)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/etc/app.conf", OP_UPDATE, b"new\n"), rec04("/dev/mtd3", 5, bsdiff4.diff(old, new))],
                          begin=b"touch \"$OTA_ROOT/begin-ran\"\n"))
    (root / "etc").mkdir()
    (root / "etc/app.conf").write_bytes(b"old\n")
    before = snapshot(root)
    real = os.statvfs

    class Small:
        def __init__(self, st):
            self.f_bavail, self.f_frsize = 64, 4096  # 256 KiB free

    monkeypatch.setattr(os, "statvfs", lambda p: Small(real(p)))
    source = install.open_source(str(pkg), gz=False)
    try:
        with pytest.raises(PackageError) as exc:
            install.Installer(source, install.Options(root=str(root), tmpdir=str(tmp_path))).run()
    finally:
        source.close()
    assert "bytes free" in str(exc.value)
    assert snapshot(root) == before


def test_messages_name_a_record_once_and_the_begin_script_no_record(tmp_path):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/etc/../x", OP_UPDATE, b"x")]))
    proc = otaunpack("-r", pkg, "--root", _root(tmp_path), "-t", tmp_path, text=False)
    assert proc.returncode == 3
    assert one_line(proc).count("record 1") == 1, proc.stderr
    pkg.write_bytes(pkg04([rec04("/etc/app.conf", OP_UPDATE, b"new\n")], begin=b"true\n"))
    proc = otaunpack("-r", pkg, "--root", tmp_path / "root", "-t", tmp_path, text=False)
    assert proc.returncode == 0
    (line,) = [ln for ln in proc.stderr.decode().splitlines() if "begin-script" in ln]
    assert "app.conf" not in line and "1/1" not in line, line


def test_x_on_a_package_that_is_not_gzip_says_use_r(tmp_path):
    import subprocess
    import sys


    root = _root(tmp_path)
    pkg = _file_pkg(tmp_path)
    proc = otaunpack("-x", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 3 and "use -r" in one_line(proc)
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", "-", "--root", str(root)],
                          input=pkg.read_bytes(), capture_output=True, cwd=PROJECT, timeout=60)
    assert proc.returncode == 3 and "use -r" in one_line(proc)
# ---------------------------------------------------------------------------- what a review found


AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="acts as another user: needs root (CI runs as root)")


@AS_ROOT
def test_a_t_reached_through_another_users_symlink_is_refused(tmp_path):
    os.chmod(tmp_path, 0o1777)
    link = tmp_path / "ota"
    os.symlink(tmp_path, link)
    os.lchown(link, 65534, 65534)  # made by another user in a sticky /tmp: they can re-point it
    root = _root(tmp_path)
    before = snapshot(root)
    proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", link, text=False)
    assert proc.returncode == 2 and "symlink of uid 65534" in one_line(proc)
    assert snapshot(root) == before


@AS_ROOT
def test_another_user_holding_a_lock_on_the_state_directory_blocks_nothing(tmp_path):
    import subprocess
    import sys

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys\n"
                               "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                               "os.setgid(65534); os.setuid(65534)\n"
                               "for name in (sys.argv[1], sys.argv[1] + '/otaunpack.lock'):\n"
                               "    try:\n"
                               "        fcntl.flock(os.open(name, os.O_RDONLY), fcntl.LOCK_EX)\n"
                               "    except OSError:\n"
                               "        pass\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\nsys.stdin.read()\n", str(state)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        root = _root(tmp_path)
        proc = otaunpack("-r", _file_pkg(tmp_path), "--root", root, "-t", tmp_path, "--state-dir", state, text=False)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/app.conf").read_bytes() == b"new\n"


def _vendor_deltas(tmp_path, n):
    import bsdiff4

    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    recs = []
    for i in range(n):
        old = b"old %d\n" % i * 50
        (root / "d" / str(i)).write_bytes(old)
        recs.append(rec04("/d/%d" % i, 5, bsdiff4.diff(old, b"new %d\n" % i * 50)))
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04(recs))
    return pkg, root


def test_a_package_without_a_manifest_with_more_deltas_than_the_ledger_keeps_is_refused(tmp_path):
    from sstarota.state import PACKAGE_DELTAS

    pkg, root = _vendor_deltas(tmp_path, PACKAGE_DELTAS + 1)
    before = snapshot(root)
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 3 and "--manifest" in one_line(proc)
    assert snapshot(root) == before


def test_an_unreadable_journal_refuses_a_delta_without_a_manifest(tmp_path):
    pkg, root = _vendor_deltas(tmp_path, 2)
    assert otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False).returncode == 0
    (root / "var/lib/sstarota/journal").write_text("{not json")
    before = snapshot(root)
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 3 and "journal" in one_line(proc)
    assert snapshot(root) == before


def test_a_later_record_rewriting_a_deltas_target_then_a_cut_finishes_on_the_rerun(tmp_path):
    import bsdiff4


    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    old = b"old\n" * 100
    (root / "d/x").write_bytes(old)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/d/x", 5, bsdiff4.diff(old, b"new\n" * 100)),
                           rec04("/d/x", OP_UPDATE, b"final\n"), rec04("/d/y", OP_ADD, b"y\n")]))
    killed = run_hooked(pkg, root, """
        if e.stage == "updating" and e.record == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert killed.returncode == -9, killed.stderr
    assert (root / "d/x").read_bytes() == b"final\n"
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, text=False)
    assert proc.returncode == 0, proc.stderr
    assert (root / "d/x").read_bytes() == b"final\n" and (root / "d/y").read_bytes() == b"y\n"
