"""Installer behaviours the vendor's field packages rely on: failing scripts and bytes after
the gzip data."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import otaunpack

PROJECT = Path(__file__).parent.parent


@pytest.fixture
def env_package(cli, tmp_path):
    """kernel, then kernel_otaenv.sh (as the 2025 make flow adds it), then a file; the end
    script records OTA_STATUS. The board has no /etc/fw_setenv: the env script fails."""
    kernel = tmp_path / "kernel"
    kernel.write_bytes(os.urandom(4096))
    env = tmp_path / "kernel_otaenv.sh"
    env.write_text("/etc/fw_setenv kernel_file_size 1000\n/etc/fw_setenv  recovery_file_size 1000\n")
    end = tmp_path / "end.sh"
    end.write_text('echo "$OTA_STATUS" > "$OTA_ROOT/status"\n')
    conf = tmp_path / "app.conf"
    conf.write_text("new\n")
    pkg = tmp_path / "p.bin"
    for argv in (["-c", pkg, "--format", "1.6", "-e", end],
                 ["-a", pkg, "-s", kernel, "-d", "/dev/mtdblock4", "--block-update", "-l", "kernel"],
                 ["-a", pkg, "-s", env, "-d", "kernel_otaenv.sh", "--script-add", "-l", "kernel_otaenv.sh"],
                 ["-a", pkg, "-s", conf, "-d", "/config/app.conf", "--file-update"]):
        code, out, err = cli.otapack(*argv)
        assert code == 0, err
    return pkg, kernel


def test_a_failing_script_record_stops_the_update_by_default(env_package, tmp_path):
    pkg, kernel = env_package
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert "script kernel_otaenv.sh exited with status 127" in last and "--ignore-script-errors" in last
    assert (root / "status").read_text() == "-1\n"
    assert (root / "dev" / "mtdblock4").read_bytes() == kernel.read_bytes()  # the record before it went in
    assert not (root / "config" / "app.conf").exists()  # the one after it did not


def test_ignore_script_errors_goes_on_as_the_vendor_does_and_says_so(env_package, tmp_path):
    pkg, kernel = env_package
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, "--ignore-script-errors")
    assert proc.returncode == 0, proc.stderr
    assert (root / "status").read_text() == "0\n"
    assert (root / "config" / "app.conf").read_text() == "new\n"
    notes = [line for line in proc.stderr.splitlines() if "status 127" in line]
    assert any("going on" in line for line in notes)
    assert any("1 script(s) failed and were let go: script kernel_otaenv.sh (status 127)" in line for line in notes)


def test_a_failing_begin_script_with_ignore_script_errors(cli, tmp_path):
    begin = tmp_path / "begin.sh"
    begin.write_text("killall no-such-app\n")
    src = tmp_path / "f"
    src.write_text("x")
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "-b", begin)[0] == 0
    assert cli.otapack("-a", pkg, "-s", src, "-d", "/f", "--file-update")[0] == 0
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 1 and "--ignore-script-errors" in proc.stderr.splitlines()[-1]
    assert not (root / "f").exists()
    proc = otaunpack("-r", pkg, "--root", root, "--ignore-script-errors")
    assert proc.returncode == 0 and (root / "f").read_text() == "x"


def _gz_package(cli, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"payload" * 1000)
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg)[0] == 0
    assert cli.otapack("-a", pkg, "-s", src, "-d", "/f", "--file-update")[0] == 0
    return gzip.compress(pkg.read_bytes()), src.read_bytes()


def test_bytes_after_the_gzip_data_are_ignored_with_one_warning(cli, tmp_path):
    data, want = _gz_package(cli, tmp_path)
    pkg = tmp_path / "signed.bin.gz"
    pkg.write_bytes(data + os.urandom(1024))  # a signature block some products append
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-x", pkg, "--root", root)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "1024 byte(s) after the end of the gzip data ignored" in warnings[0]
    assert (root / "f").read_bytes() == want
    # through a pipe too
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", "-", "-t", tmp_path, "--root", root,
                           "-q"], input=pkg.read_bytes(), capture_output=True, cwd=PROJECT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_corrupt_inflated_stream_is_still_rejected(cli, tmp_path):
    data, _ = _gz_package(cli, tmp_path)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x55
    pkg = tmp_path / "bad.bin.gz"
    pkg.write_bytes(bytes(bad) + b"\0" * 1024)
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-x", pkg, "--root", root)
    assert proc.returncode == 3
    assert list(root.iterdir()) == []


def test_a_vendor_dir_target_with_a_double_slash_installs(tmp_path):
    """`otapack -d /customer/ --dir-update` makes /customer//x (the vendor joins without
    normalising): the installer reads it as the kernel does."""
    from support import pkg04, rec04

    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/customer//x", 2, b"from a trailing-slash prefix")]))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "customer" / "x").read_bytes() == b"from a trailing-slash prefix"


def test_targets_beyond_the_16_masks_are_refused_unless_all_targets(tmp_path):
    from support import pkg16, rec16

    names = ["/p/%02d" % i for i in range(18)]
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg16([rec16(" ".join(names), 2, b"image", src=b"img")], begin=b"touch begin-ran\n"))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root)
    assert proc.returncode == 3
    last = proc.stderr.splitlines()[-1]
    assert "2 target(s) beyond the 16 masks" in last and "/p/16 /p/17" in last and "--all-targets" in last
    assert list(root.iterdir()) == []
    proc = otaunpack("-r", pkg, "--root", root, "--all-targets")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(root / "p")) == [n[3:] for n in names]
