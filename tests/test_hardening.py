"""otaunpack under attack and faults: escapes, partial updates, leftovers, crashes, memory.

Each test reproduces one finding of an adversarial review of the installer. Packages are
built with our otapack, or byte by byte here from the documented 0.4 layout where a test
needs shapes otapack would not make (100,000 records, hostile names).
"""

import gzip
import os
import signal
import stat
import subprocess
import sys

import pytest

from support import (BEGIN, MARKER, OP_ADD, OP_BLOCK, OP_DELETE, OP_DIFF, OP_SCRIPT, OP_UBI, OP_UPDATE, PROJECT,
                     one_line, otaunpack, peak_rss_kib, pkg04, rec04, run_hooked, snapshot)


# ---------------------------------------------------------------------------- helpers



@pytest.fixture
def begin(tmp_path):
    p = tmp_path / "begin.sh"
    p.write_bytes(BEGIN)
    return p


def assert_rejected_untouched(proc, root, before, want=None):
    assert proc.returncode == 3, proc.stderr
    line = one_line(proc)
    if want:
        assert want in line, line
    assert snapshot(root) == before
    assert not (root / MARKER).exists()
    return line


def swap_mid_record(pkg, root, directory, outside):
    """Install pkg; once record 1 has moved some bytes, directory becomes a symlink to outside
    (the real one kept as <directory>.real): the attacker's swap, at an exact moment."""
    return run_hooked(pkg, root, """
        if e.stage == "updating" and e.record == 1 and e.done > state.setdefault("start", e.done) \\
                and not state["fired"]:
            state["fired"] = True
            os.rename("%(d)s", "%(d)s.real")
            os.symlink("%(out)s", "%(d)s")
    """ % {"d": directory, "out": outside})


# ---------------------------------------------------------------------------- 1. escapes


def test_directory_swapped_for_a_symlink_during_a_file_diff_writes_nothing_outside(cli, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"A" * 300000)
    new.write_bytes(b"A" * 150000 + b"B" * 1000 + b"A" * 150000)
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    cli.pack("-a", pkg, "-o", old, "-n", new, "-d", "/d/f", "--file-update-diff", "--patch-threshold", "off")
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(old.read_bytes())
    outside.mkdir()
    (outside / "f").write_bytes(old.read_bytes())  # the attacker's copy, so the patch applies there too
    # while the patch streams in, d becomes a symlink to a directory outside the root
    proc = swap_mid_record(pkg, root, root / "d", outside)
    assert "Traceback" not in proc.stderr
    assert os.listdir(outside) == ["f"], "a file was created outside the root"
    assert (outside / "f").read_bytes() == old.read_bytes(), "a file outside the root was replaced"
    assert (root / "d").is_symlink()
    # the result went into the directory that was checked (it holds the new content), or nowhere
    if proc.returncode == 0:
        assert (root / "d.real" / "f").read_bytes() == new.read_bytes()
    else:
        assert proc.returncode == 1
        assert (root / "d.real" / "f").read_bytes() == old.read_bytes()


def test_directory_swapped_between_the_deletes_of_one_record_deletes_nothing_outside(cli, tmp_path):
    names = ["/d/f%d" % i for i in range(16)]
    pkg = tmp_path / "p.bin"
    src = tmp_path / "src"
    src.write_bytes(b"x")
    cli.pack("-c", pkg, "--format", "1.6")
    cli.pack("-a", pkg, "-s", src, "-d", " ".join(names), "--file-delete")
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    for n in names:
        (root / n[1:]).write_bytes(b"in")
        (outside / os.path.basename(n)).write_bytes(b"out")
    proc = swap_mid_record(pkg, root, root / "d", outside)
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(outside)) == sorted(os.path.basename(n) for n in names), \
        "files outside the root were deleted"
    assert proc.returncode in (0, 1), proc.stderr


def test_a_device_node_inside_the_root_is_refused_unless_allowed(cli, tmp_path, begin):
    img = tmp_path / "img"
    img.write_bytes(b"\x5a" * 4096)
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-b", begin)
    cli.pack("-a", pkg, "-s", img, "-d", "/dev/mtdblock3", "--block-update")
    backing = tmp_path / "disk"
    backing.write_bytes(b"\0" * 65536)
    loop = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True)
    dev = loop.stdout.strip()
    try:
        root = tmp_path / "root"
        (root / "dev").mkdir(parents=True)
        st = os.stat(dev)
        os.mknod(root / "dev" / "mtdblock3", stat.S_IFBLK | 0o600, st.st_rdev)
        before = snapshot(root)
        proc = otaunpack("-r", pkg, "--root", root, text=False)
        line = assert_rejected_untouched(proc, root, before, "device")
        assert "--allow-devices" in line
        assert backing.read_bytes() == b"\0" * 65536
        proc = otaunpack("-r", pkg, "--root", root, "--allow-devices", text=False)
        assert proc.returncode == 0, proc.stderr
        assert backing.read_bytes()[:4096] == b"\x5a" * 4096
    finally:
        subprocess.run(["losetup", "-d", dev])


def test_a_device_node_at_a_file_target_is_refused(cli, tmp_path, begin):
    pkg = tmp_path / "p.bin"
    src = tmp_path / "src"
    src.write_bytes(b"data")
    cli.pack("-c", pkg, "-b", begin)
    cli.pack("-a", pkg, "-s", src, "-d", "/config/x", "--file-update")
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    os.mknod(root / "config" / "x", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    before = snapshot(root)
    for extra in ([], ["--allow-devices"]):
        assert_rejected_untouched(otaunpack("-r", pkg, "--root", root, *extra, text=False), root, before, "/config/x")


# ---------------------------------------------------------------------------- 3. capacity of a delta's result


def test_a_partition_delta_whose_result_exceeds_the_partition_is_rejected_before_writing(cli, tmp_path, begin):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(os.urandom(16384) * 2)
    new.write_bytes(old.read_bytes() * 4)  # 128 KiB result for a 64 KiB partition
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-b", begin)
    cli.pack("-a", pkg, "-o", old, "-n", new, "-d", "/dev/mtdblock4", "--file-update-diff",
            "--patch-threshold", "off")
    backing = tmp_path / "disk"
    backing.write_bytes(old.read_bytes() + b"\xff" * 32768)
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        root = tmp_path / "root"
        (root / "dev").mkdir(parents=True)
        os.mknod(root / "dev" / "mtdblock4", stat.S_IFBLK | 0o600, os.stat(dev).st_rdev)
        before = snapshot(root)
        image = backing.read_bytes()
        proc = otaunpack("-r", pkg, "--root", root, "--allow-devices", text=False)
        assert_rejected_untouched(proc, root, before, "/dev/mtdblock4")
        assert backing.read_bytes() == image
    finally:
        subprocess.run(["losetup", "-d", dev])


# ---------------------------------------------------------------------------- 4. output channels


def test_a_closed_stderr_never_stops_the_update(cli, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    end = tmp_path / "end.sh"
    end.write_text('echo "$OTA_STATUS" > "$OTA_ROOT/status"\n')
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-e", end)
    for i in range(6):
        (files / str(i)).write_bytes(b"%d" % i * 1000)
        cli.pack("-a", pkg, "-s", files / str(i), "-d", "/data/%d" % i, "--file-update")
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", str(pkg), "--root", str(root)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, cwd=PROJECT)
    proc.stderr.close()  # the reader went away (`| head`, a closed ssh session)
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    for i in range(6):
        assert (root / "data" / str(i)).read_bytes() == b"%d" % i * 1000
    assert (root / "status").read_text() == "0\n"


def test_a_failing_progress_fd_never_stops_the_update(cli, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    cli.pack("-a", pkg, "-s", src, "-d", "/a", "--file-update")
    root = tmp_path / "root"
    root.mkdir()
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", str(pkg), "--root", str(root),
                               "--progress-fd", str(w)], pass_fds=(w,), capture_output=True, text=True, cwd=PROJECT,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (root / "a").read_bytes() == b"payload"


# ---------------------------------------------------------------------------- 5. target kinds, in the verify pass


def _one_record_pkg(tmp_path, rec, begin_script=BEGIN):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec], begin=begin_script))
    return pkg


@pytest.mark.parametrize("case", ["file-under-file", "block-at-dir", "ubi-at-dir", "diff-at-dir", "symlink-loop",
                                  "diff-missing", "fifo-file", "fifo-block", "socket-file"])
def test_target_problems_are_found_before_anything_runs(tmp_path, case):
    import socket

    root = tmp_path / "root"
    (root / "cfg").mkdir(parents=True)
    (root / "cfg" / "plain").write_bytes(b"plain")
    patch = _tiny_patch(tmp_path)
    if case == "file-under-file":
        rec = rec04("/cfg/plain/x", OP_UPDATE, b"new")
    elif case == "block-at-dir":
        rec = rec04("/cfg", OP_BLOCK, b"img")
    elif case == "ubi-at-dir":
        rec = rec04("/cfg", OP_UBI, b"img")
    elif case == "diff-at-dir":
        rec = rec04("/cfg", OP_DIFF, patch)
    elif case == "symlink-loop":
        os.symlink("l2", root / "l1")
        os.symlink("l1", root / "l2")
        rec = rec04("/l1/x", OP_UPDATE, b"new")
    elif case == "diff-missing":
        rec = rec04("/cfg/absent", OP_DIFF, patch)
    elif case == "fifo-file":
        os.mkfifo(root / "cfg" / "fifo")
        rec = rec04("/cfg/fifo", OP_UPDATE, b"new")
    elif case == "fifo-block":
        os.mkfifo(root / "cfg" / "fifo")
        rec = rec04("/cfg/fifo", OP_BLOCK, b"new")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "cfg" / "sock"))
        s.close()
        rec = rec04("/cfg/sock", OP_UPDATE, b"new")
    pkg = _one_record_pkg(tmp_path, rec)
    before = snapshot(root)
    assert_rejected_untouched(otaunpack("-r", pkg, "--root", root, timeout=60, text=False), root, before)


def test_a_fifo_as_a_delta_source_with_a_manifest_is_rejected_not_waited_on(cli, tmp_path, begin):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"old content " * 1000)
    new.write_bytes(b"new content " * 1000)
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-b", begin, "--manifest")
    cli.pack("-a", pkg, "-o", old, "-n", new, "-d", "/cfg/f", "--file-update-diff", "--patch-threshold", "off")
    root = tmp_path / "root"
    (root / "cfg").mkdir(parents=True)
    os.mkfifo(root / "cfg" / "f")
    before = snapshot(root)
    assert_rejected_untouched(otaunpack("-r", pkg, "--root", root, timeout=60, text=False), root, before, "/cfg/f")


def test_a_255_byte_file_name_installs(cli, tmp_path):
    name = "n" * 255
    src = tmp_path / "src"
    src.write_bytes(b"long name")
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "--format", "1.6")  # 0.4 targets hold at most 255 bytes in all
    cli.pack("-a", pkg, "-s", src, "-d", "/cfg/" + name, "--file-update")
    root = tmp_path / "root"
    (root / "cfg").mkdir(parents=True)
    (root / "cfg" / name).write_bytes(b"old")
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(root / "cfg") == [name]
    assert (root / "cfg" / name).read_bytes() == b"long name"


def _tiny_patch(tmp_path):
    import bsdiff4

    return bsdiff4.diff(b"old data " * 10, b"new data " * 10)


# ---------------------------------------------------------------------------- 6. leftovers


def _hidden(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root)
                  for n in files if n.startswith("."))


def test_a_killed_install_leaves_temp_files_that_the_rerun_removes(cli, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 << 20))
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    cli.pack("-a", pkg, "-s", big, "-d", "/data/big", "--file-update")
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "big").write_bytes(b"old")
    (root / "data" / ".keep").write_bytes(b"not ours")
    # SIGKILL once the first MiB has gone into the temp file beside the target
    proc = run_hooked(pkg, root, """
        if e.stage == "updating" and e.record == 1 and e.done - state.setdefault("start", e.done) >= 1 << 20:
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL
    left = _hidden(root)
    assert len(left) == 2, left  # the premise: the interrupted run left its temp file
    assert (root / "data" / "big").read_bytes() == b"old"
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert proc.returncode == 0, proc.stderr
    assert (root / "data" / "big").read_bytes() == big.read_bytes()
    assert _hidden(root) == ["data/.keep"]


def test_a_full_work_directory_leaves_no_patch_spool(cli, tmp_path, begin):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(os.urandom(1 << 20))
    new.write_bytes(os.urandom(1 << 20))
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-b", begin)
    cli.pack("-a", pkg, "-o", old, "-n", new, "-d", "/f", "--file-update-diff", "--patch-threshold", "off")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(old.read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    script = ('mount -t tmpfs -o size=256k none {w} && {py} -m sstarota.cli.otaunpack -r {p} --root {r} -t {w}; '
              'echo "rc=$?"; ls -A {w}').format(w=work, py=sys.executable, p=pkg, r=root)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=PROJECT,
                          timeout=120)
    out = proc.stdout.split()
    assert out[0] == "rc=3", proc.stdout + proc.stderr  # no room for the patch: found in the verify pass
    assert out[1:] == [], "left in -t: %s" % out[1:]
    assert "Traceback" not in proc.stderr
    assert (root / "f").read_bytes() == old.read_bytes()


# ---------------------------------------------------------------------------- 7. memory


def test_memory_is_flat_in_the_number_of_records(tmp_path):
    def package(n):
        p = tmp_path / ("p%d.bin" % n)
        p.write_bytes(pkg04([rec04("/gone/%d" % i, OP_DELETE) for i in range(n)]))
        return p

    root = tmp_path / "root"
    root.mkdir()
    small = peak_rss_kib(["-r", package(1000), "--root", root, "-q"])
    large = peak_rss_kib(["-r", package(60000), "--root", root, "-q"])
    assert large - small < 6 * 1024, "60,000 records cost %d KiB more than 1,000" % (large - small)


def test_memory_is_flat_in_the_size_of_scripts(tmp_path):
    def package(size):
        body = (b"# " + b"x" * 77 + b"\n") * (size // 80)
        p = tmp_path / ("s%d.bin" % size)
        p.write_bytes(pkg04([rec04("s%d.sh" % i, OP_SCRIPT, body) for i in range(3)]))
        return p

    root = tmp_path / "root"
    root.mkdir()
    small = peak_rss_kib(["-r", package(8000), "--root", root, "-q", "-t", tmp_path])
    large = peak_rss_kib(["-r", package(12 << 20), "--root", root, "-q", "-t", tmp_path])
    assert large - small < 6 * 1024, "three 12 MiB scripts cost %d KiB more than small ones" % (large - small)


def test_a_record_count_above_the_limit_is_refused_in_one_line(tmp_path):
    from sstarota import schema

    limit = schema.MAX_RECORDS
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/gone", OP_DELETE)], count=limit + 1))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert proc.returncode == 3
    assert str(limit) in one_line(proc)


# ---------------------------------------------------------------------------- 8. tracebacks


def test_a_package_path_that_is_a_directory(tmp_path):
    proc = otaunpack("-r", tmp_path, "--root", tmp_path, text=False)
    assert proc.returncode in (2, 3)
    assert "is a directory" in one_line(proc)


@pytest.mark.parametrize("gz", [False, True])
def test_a_package_on_a_pipe_is_read_as_a_stream(cli, tmp_path, gz):
    src = tmp_path / "src"
    src.write_bytes(b"through a pipe")
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    cli.pack("-a", pkg, "-s", src, "-d", "/a", "--file-update")
    data = gzip.compress(pkg.read_bytes()) if gz else pkg.read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-x" if gz else "-r", "/dev/stdin", "--root", root, "-t", tmp_path, stdin=data, text=False)
    assert proc.returncode == 0, proc.stderr
    assert (root / "a").read_bytes() == b"through a pipe"


def test_an_unreadable_package_is_one_line(tmp_path):
    proc = otaunpack("-r", "/proc/self/mem", "--root", tmp_path, "--dry-run", text=False)
    assert proc.returncode in (2, 3)
    assert "Input/output error" in one_line(proc)


def test_stdin_without_a_usable_spool_directory_is_one_line(cli, tmp_path):
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    proc = otaunpack("-r", "-", "-t", "/proc/self", "--root", tmp_path, stdin=pkg.read_bytes(), text=False)
    assert proc.returncode == 2
    assert "/proc/self" in one_line(proc)


def test_a_device_node_that_cannot_be_opened_is_rejected_in_the_verify_pass(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev" / "mtdblock9", stat.S_IFBLK | 0o600, os.makedev(240, 7))  # no such device
    pkg = _one_record_pkg(tmp_path, rec04("/dev/mtdblock9", OP_BLOCK, b"img"))
    before = snapshot(root)
    proc = otaunpack("-r", pkg, "--root", root, "--allow-devices", text=False)
    assert_rejected_untouched(proc, root, before, "/dev/mtdblock9")


def test_dry_run_prints_a_non_utf8_target(tmp_path):
    pkg = _one_record_pkg(tmp_path, rec04(b"/cfg/\xff\xfe.bin", OP_UPDATE, b"x"), begin_script=b"")
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, "--dry-run", env=dict(os.environ, LC_ALL="C.UTF-8",
                                                                     PYTHONIOENCODING="utf-8"), text=False)
    assert proc.returncode == 0, proc.stderr
    assert b"/cfg/" in proc.stdout and b"Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- 9. cosmetic


def test_terminal_escapes_in_targets_and_labels_are_escaped(cli, tmp_path):
    esc = "/cfg/\x1b[2J\x1b]0;owned\x07x"
    pkg = _one_record_pkg(tmp_path, rec04(esc, OP_UPDATE, b"x"), begin_script=b"")
    root = tmp_path / "root"
    (root / "cfg").mkdir(parents=True)
    proc = otaunpack("-r", pkg, "--root", root, "--dry-run", text=False)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in proc.stdout and b"\x1b" not in proc.stderr
    assert b"\x07" not in proc.stdout and b"\x07" not in proc.stderr
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert b"\x1b" not in proc.stderr


def test_stdin_gzip_detection_does_not_depend_on_the_first_read(tmp_path):
    """A pipe that hands out one byte at a time is still recognised as gzip."""
    import io

    from sstarota import install

    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def readinto(self, b):
            if not self.data or not len(b):
                return 0
            b[0] = self.data[0]
            self.data = self.data[1:]
            return 1

    data = gzip.compress(pkg04([rec04("/a", OP_UPDATE, b"trickled")]))
    root = tmp_path / "root"
    root.mkdir()
    source = install.open_source("-", tmpdir=str(tmp_path), stdin=io.BufferedReader(Trickle(data), 1))
    try:
        install.Installer(source, install.Options(root=str(root), tmpdir=str(tmp_path))).run()
    finally:
        source.close()
    assert (root / "a").read_bytes() == b"trickled"


def test_a_gzip_trailer_error_is_named_as_such(tmp_path):
    data = bytearray(gzip.compress(pkg04([rec04("/a", OP_UPDATE, b"small")])))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    pkg = tmp_path / "p.bin.gz"
    pkg.write_bytes(bytes(data))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-x", pkg, "--root", root, text=False)
    assert proc.returncode == 3
    line = one_line(proc)
    assert "header" not in line and ("CRC" in line or "gzip" in line), line


# ---------------------------------------------------------------------------- a second review


def _in_process(pkg, root, board_root=None, **opts):
    """Install in this process; board_root: act as a board (no --root) whose / is that directory."""
    from sstarota import install
    from sstarota.confine import Root
    from sstarota.errors import OtaError

    source = install.open_source(str(pkg))
    try:
        inst = install.Installer(source, install.Options(root=None if board_root else str(root), **opts))
        if board_root:
            inst.ctx.fsroot = Root(None)
            inst.ctx.fsroot.real = str(board_root)
        try:
            inst.run()
            return 0
        except OtaError as exc:
            return exc.exit_code
    finally:
        source.close()


def test_a_device_node_swapped_after_its_check_is_not_written(tmp_path, monkeypatch):
    """The writer opens the node in the directory the walk reached, not by its name again."""
    from sstarota.install import pipeline

    disks = []
    for name in ("inside", "outside"):
        backing = tmp_path / name
        backing.write_bytes(b"\0" * 65536)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                             check=True).stdout.strip()
        disks.append((backing, dev))
    try:
        root, host = tmp_path / "root", tmp_path / "host"
        (root / "dev").mkdir(parents=True)
        host.mkdir()
        os.mknod(root / "dev" / "blk", stat.S_IFBLK | 0o600, os.stat(disks[0][1]).st_rdev)
        os.mknod(host / "blk", stat.S_IFBLK | 0o600, os.stat(disks[1][1]).st_rdev)
        pkg = tmp_path / "p.bin"
        pkg.write_bytes(pkg04([rec04("/dev/blk", OP_BLOCK, b"\x5a" * 4096)]))
        real = pipeline.open_dest

        def swapping(ctx, rec, name, create=False):
            dest = real(ctx, rec, name, create=create)
            if create:  # the apply pass: the attacker swaps /dev right after the check
                os.rename(root / "dev", root / "dev.old")
                os.symlink(str(host), root / "dev")
            return dest

        monkeypatch.setattr(pipeline, "open_dest", swapping)
        assert _in_process(pkg, root, allow_devices=True) == 0
        assert disks[1][0].read_bytes() == b"\0" * 65536, "a device outside the root was written"
        assert disks[0][0].read_bytes()[:4096] == b"\x5a" * 4096
    finally:
        for _, dev in disks:
            subprocess.run(["losetup", "-d", dev])


@pytest.mark.parametrize("target", ["/dev/mtd9", "//dev/mtd9", "/dev//mtd9"])
def test_on_a_board_a_missing_dev_target_is_refused_however_it_is_spelt(tmp_path, target):
    board = tmp_path / "board"
    (board / "dev").mkdir(parents=True)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04(target, OP_BLOCK, b"img")]))
    assert _in_process(pkg, None, board_root=board) == 3
    assert os.listdir(board / "dev") == []


def test_on_a_board_a_regular_file_in_dev_is_not_a_partition(tmp_path):
    board = tmp_path / "board"
    (board / "dev").mkdir(parents=True)
    (board / "dev" / "mtd9").write_bytes(b"a file in devtmpfs")
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/dev/mtd9", OP_BLOCK, b"img")]))
    assert _in_process(pkg, None, board_root=board) == 3
    assert (board / "dev" / "mtd9").read_bytes() == b"a file in devtmpfs"


def test_on_a_board_a_block_image_file_gets_its_directories(tmp_path):
    board = tmp_path / "board"
    board.mkdir()
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/data/new/img.bin", OP_BLOCK, b"image"), rec04("/data/u/v.img", OP_UBI, b"vol")]))
    assert _in_process(pkg, None, board_root=board) == 0
    assert (board / "data" / "new" / "img.bin").read_bytes() == b"image"
    assert (board / "data" / "u" / "v.img").read_bytes() == b"vol"


def test_files_that_only_look_like_ours_are_not_swept(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    (root / "etc").mkdir(parents=True)
    work.mkdir()
    names = ["sstarota-99999-notes", "sstarota-4000000-backup", ".sstarota-99999-keep.tmp"]
    for d in (root / "etc", work):
        for n in names:
            (d / n).write_text("mine")
    stale = ".sstarota-4000000-0badf00d.tmp"  # ours, its process long gone
    (root / "etc" / stale).write_text("left by a killed run")
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/etc/x.conf", OP_ADD, b"hi\n")]))
    proc = otaunpack("-r", pkg, "--root", root, "-t", work, text=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(work)) == sorted(names)
    assert sorted(os.listdir(root / "etc")) == sorted(names + ["x.conf"])


def test_begin_and_end_scripts_have_a_1_mib_limit_in_packer_and_reader(cli, tmp_path):
    from sstarota import schema

    big = (b"# " + b"x" * 77 + b"\n") * ((schema.MAX_BEGIN_END // 80) + 1)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/a", OP_ADD, b"1")], begin=big))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert proc.returncode == 3 and "limit for begin and end scripts" in one_line(proc)
    script = tmp_path / "begin.sh"
    script.write_bytes(big)
    code, out, err = cli.otapack("-c", tmp_path / "q.bin", "-b", script)
    assert code == 2 and "script record" in err
    assert not (tmp_path / "q.bin").exists()


def test_endless_bytes_after_the_gzip_data_on_a_pipe_are_not_drained(cli, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"payload")
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg)
    cli.pack("-a", pkg, "-s", src, "-d", "/f", "--file-update")
    gz = tmp_path / "p.bin.gz"
    gz.write_bytes(gzip.compress(pkg.read_bytes()))
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    script = "cat {gz}; cat /dev/zero".format(gz=gz)
    feeder = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", "-", "-t", str(work), "--root",
                               str(root), "-q"], stdin=feeder.stdout, capture_output=True, text=True, cwd=PROJECT,
                              timeout=120)
    finally:
        feeder.stdout.close()
        feeder.kill()
        feeder.wait()
    assert proc.returncode == 0, proc.stderr
    assert "more than 1048576 byte(s) after the end of the gzip data ignored" in proc.stderr
    assert (root / "f").read_bytes() == b"payload"
    assert os.listdir(work) == []


def test_sigterm_mid_update_runs_the_end_script_and_cleans_up(cli, tmp_path):
    end = tmp_path / "end.sh"
    end.write_text('echo "$OTA_STATUS" > "$OTA_ROOT/status"\n')
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 << 20))
    pkg = tmp_path / "p.bin"
    cli.pack("-c", pkg, "-e", end)
    cli.pack("-a", pkg, "-s", big, "-d", "/data/a", "--file-update")
    cli.pack("-a", pkg, "-s", big, "-d", "/data/b", "--file-update")
    root = tmp_path / "root"
    root.mkdir()
    proc = run_hooked(pkg, root, """
        if e.stage == "updating" and e.record == 2 and e.done - state.setdefault("start", e.done) >= 1 << 20:
            os.kill(os.getpid(), signal.SIGTERM)
    """)
    assert proc.returncode == 1, proc.stderr
    assert "stopped by signal %d" % signal.SIGTERM in proc.stderr.splitlines()[-1]
    assert (root / "status").read_text() == "-1\n"
    assert (root / "data" / "a").read_bytes() == big.read_bytes()
    assert sorted(os.listdir(root / "data")) == ["a"]  # b's temp file removed, b never appeared


def test_an_absolute_symlink_climbs_through_what_it_names(tmp_path):
    """/etc -> <root>/mnt/l/../etc with /mnt/l -> x/y: the kernel reaches x/etc, so do we."""
    root = tmp_path / "root"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "etc").mkdir()
    (root / "mnt").mkdir()
    os.symlink("../x/y", root / "mnt" / "l")
    os.symlink(str(root / "mnt" / "l" / ".." / "etc"), root / "etc")
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/etc/conf", OP_UPDATE, b"where the kernel looks")]))
    proc = otaunpack("-r", pkg, "--root", root, text=False)
    assert proc.returncode == 0, proc.stderr
    assert (root / "x" / "etc" / "conf").read_bytes() == b"where the kernel looks"
