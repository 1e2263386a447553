"""The board's policy under attack and faults (issue 20, items 3-5): nothing under --root
touches the host, a version store that does not work refuses a versioned package before
anything is written, and the policy's files are regular files of a bounded size.

otaunpack runs as the board runs it (a subprocess, with a timeout: a FIFO that would block
it fails the test instead of hanging it); the version store is also driven in-process,
where a test checks a refusal's reason code.
"""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import install, signing
from sstarota.errors import PackageError
from sstarota.install import policy
from sstarota.install.policy import Policy, version_key

from support import otaunpack

PROJECT = Path(__file__).parent.parent
BEGIN = b'touch "$OTA_ROOT/begin-ran"\n'


def one_error(proc):
    """The error output: one line, no traceback."""
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def policy_pkg(cli, tmp_path, version="2.1", name="pkg", extra=()):
    """A package with a manifest (and a version unless None): a begin script, one file record."""
    begin, src, pkg = tmp_path / "begin.sh", tmp_path / (name + ".src"), tmp_path / name
    begin.write_bytes(BEGIN)
    src.write_bytes(b"new\n")
    vopt = ("--fw-version", version) if version is not None else ()
    code, _, err = cli.otapack("-c", pkg, "-b", begin, "--manifest", *vopt, *extra)
    assert code == 0, err
    code, _, err = cli.otapack("-a", pkg, "-s", src, "-d", "/etc/f.txt", "--file-update")
    assert code == 0, err
    return pkg


@pytest.fixture
def board(tmp_path):
    """A staging root with a board config and an installed version 2.0."""
    root = tmp_path / "root"
    (root / "etc/sstarota").mkdir(parents=True)
    (root / "etc/sstarota/board.conf").write_text("compatible = cam-a\n")
    (root / "etc/sstarota/version").write_text("2.0\n")
    return root


def untouched(root):
    """Nothing of the package written and no script run."""
    return not (root / "begin-ran").exists() and not (root / "etc/f.txt").exists()


def refused_untouched(proc, root):
    assert proc.returncode == 3, proc.stderr.decode()
    one_error(proc)
    assert untouched(root)


def host_tools(tmp_path):
    """fw_printenv / fw_setenv on PATH that log every call: the host's u-boot tools."""
    bin_, log = tmp_path / "hostbin", tmp_path / "host-tools.log"
    bin_.mkdir()
    for tool in ("fw_printenv", "fw_setenv"):
        (bin_ / tool).write_text('#!/bin/sh\necho "%s $*" >> %s\necho sst_ver=9\n' % (tool, log))
        (bin_ / tool).chmod(0o755)
    return dict(os.environ, PATH="%s:%s" % (bin_, os.environ["PATH"])), log


def root_tools(root, printenv_code=0):
    """Fake u-boot tools inside the root, keeping their environment in ROOT/uboot.env."""
    env = root / "uboot.env"
    env.write_text("sst_ver=2.0\nbootdelay=0\n")
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "fw_printenv").write_text('#!/bin/sh\n[ %d = 0 ] || exit %d\ncat "%s"\n' % (printenv_code, printenv_code, env))
    (sbin / "fw_setenv").write_text('#!/bin/sh\necho "$1=$2" > "%s.new" && grep -v "^$1=" "%s" >> "%s.new"\n'
                                    'mv "%s.new" "%s"\n' % (env, env, env, env, env))
    for tool in ("fw_printenv", "fw_setenv"):
        (sbin / tool).chmod(0o755)
    return env


# ---------------------------------------------------------------------------- item 3: --root


def test_version_env_under_root_never_runs_the_hosts_u_boot_tools(cli, tmp_path, board):
    env, log = host_tools(tmp_path)
    (board / "etc/sstarota/board.conf").write_text("version_env = sst_ver\n")
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", env=env, text=False)
    refused_untouched(proc, board)  # the store cannot be reached without the host: refused, not skipped
    assert not log.exists()
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, name="p2"), "--root", board, "-q", "--version-store-optional",
                     env=env, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not log.exists()


def test_version_env_under_root_uses_the_tools_its_config_names_inside_the_root(cli, tmp_path, board):
    env, log = host_tools(tmp_path)
    uenv = root_tools(board)
    (board / "etc/sstarota/board.conf").write_text(
        "version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\nfw_setenv = /usr/sbin/fw_setenv\n")
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, version="1.9", name="old"), "--root", board, "-q", env=env,
                     text=False)
    refused_untouched(proc, board)  # a downgrade from the root's 2.0 (the host's tools would say 9)
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, version="2.1"), "--root", board, "-q", env=env, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert uenv.read_text().splitlines()[0] == "sst_ver=2.1"
    assert not log.exists()


def test_a_package_replacing_the_roots_fw_setenv_does_not_get_it_run(cli, tmp_path, board):
    """The tools are opened in the verify pass: what a package writes at their name later (here
    with --no-scripts, where no code of the package may run) is not what runs."""
    uenv = root_tools(board)
    (board / "etc/sstarota/board.conf").write_text(
        "version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\nfw_setenv = /usr/sbin/fw_setenv\n")
    mark = tmp_path / "package-code-ran"
    evil = tmp_path / "evil"
    evil.write_text('#!/bin/sh\ntouch "%s"\n' % mark)
    pkg = policy_pkg(cli, tmp_path)
    code, _, err = cli.otapack("-a", pkg, "-s", evil, "-d", "/usr/sbin/fw_setenv", "-m", "0x1ed", "--file-update")
    assert code == 0, err
    proc = otaunpack("-r", pkg, "--root", board, "-q", "--no-scripts", text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (board / "usr/sbin/fw_setenv").read_text() == evil.read_text()
    assert not mark.exists()
    assert uenv.read_text().splitlines()[0] == "sst_ver=2.1"


def test_tools_named_outside_the_root_are_refused(cli, tmp_path, board):
    env, log = host_tools(tmp_path)
    (board / "usr/sbin").mkdir(parents=True)
    os.symlink(str(tmp_path / "hostbin/fw_printenv"), str(board / "usr/sbin/fw_printenv"))
    (board / "etc/sstarota/board.conf").write_text(
        "version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\nfw_setenv = /../hostbin/fw_setenv\n")
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", env=env, text=False)
    assert proc.returncode in (2, 3), proc.stderr.decode()
    one_error(proc)
    assert untouched(board) and not log.exists()


def test_a_symlink_at_the_version_files_temp_name_does_not_touch_the_host(cli, tmp_path, board):
    host = tmp_path / "host-file"
    host.write_text("precious\n")
    os.symlink(str(host), str(board / "etc/sstarota/version.new"))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert host.read_text() == "precious\n"
    assert (board / "etc/sstarota/version").read_text() == "2.1\n"
    assert not (board / "etc/sstarota/version").is_symlink()


def test_a_version_file_linked_out_of_the_root_is_refused_before_writing(cli, tmp_path, board):
    host = tmp_path / "host-version"
    host.write_text("1.0\n")
    (board / "etc/sstarota/version").unlink()
    os.symlink(str(host), str(board / "etc/sstarota/version"))
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)
    assert host.read_text() == "1.0\n"


def test_a_version_file_linked_inside_the_root_is_followed_there(cli, tmp_path, board):
    (board / "data").mkdir()
    (board / "data/version").write_text("2.0\n")
    (board / "etc/sstarota/version").unlink()
    os.symlink("../../data/version", str(board / "etc/sstarota/version"))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, version="1.0", name="old"), "--root", board, "-q", text=False)
    refused_untouched(proc, board)
    assert "downgrade refused" in one_error(proc)
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (board / "data/version").read_text() == "2.1\n"
    assert os.readlink(str(board / "etc/sstarota/version")) == "../../data/version"


def test_the_version_file_is_replaced_through_the_confined_walk_with_fsync(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "etc/sstarota").mkdir(parents=True)
    (root / "etc/sstarota/board.conf").write_text("")
    pol = Policy.load(root=str(root))
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    pol.record_version("3.0", note=lambda m: None)
    assert (root / "etc/sstarota/version").read_text() == "3.0\n"
    assert len(synced) >= 2  # the file, then its directory
    assert [n for n in os.listdir(root / "etc/sstarota") if n.startswith(".")] == []


# ---------------------------------------------------------------------------- item 4: fail closed


def test_a_version_store_in_a_missing_directory_refuses_a_versioned_package(cli, tmp_path, board):
    (board / "etc/sstarota/board.conf").write_text("version_file = /data/sstarota/version\n")
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)
    # an unversioned package has nothing to record: it installs
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, version=None, name="plain"), "--root", board, "-q", text=False)
    assert proc.returncode == 0, proc.stderr.decode()


def test_the_refusal_carries_its_reason_code(cli, tmp_path, board):
    (board / "etc/sstarota/board.conf").write_text("version_file = /data/sstarota/version\n")
    pkg = policy_pkg(cli, tmp_path)
    source = install.open_source(str(pkg), gz=False)
    try:
        with pytest.raises(PackageError) as exc:
            install.Installer(source, install.Options(root=str(board), tmpdir=str(tmp_path),
                                                      policy=Policy.load(root=str(board)))).run()
    finally:
        source.close()
    assert exc.value.reason == policy.REASON_VERSION_STORE
    assert untouched(board)


def test_a_read_only_etc_refuses_a_versioned_package_before_writing(cli, tmp_path, board):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs a private mount namespace (unshare -m)")
    pkg = policy_pkg(cli, tmp_path)
    etc = board / "etc"
    cmd = ('mount --bind "{0}" "{0}" && mount -o remount,ro,bind "{0}" && exec "$@"'.format(etc))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd, "sh", sys.executable, "-m", "sstarota.cli.otaunpack",
                           "-r", str(pkg), "--root", str(board), "-q"], capture_output=True, cwd=PROJECT, timeout=60)
    refused_untouched(proc, board)
    assert (board / "etc/sstarota/version").read_text() == "2.0\n"


def test_a_failing_fw_printenv_refuses_and_writes_no_variable(cli, tmp_path, board):
    uenv = root_tools(board, printenv_code=1)
    (board / "etc/sstarota/board.conf").write_text(
        "version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\nfw_setenv = /usr/sbin/fw_setenv\n")
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)
    assert uenv.read_text() == "sst_ver=2.0\nbootdelay=0\n"


def test_an_unset_u_boot_variable_is_no_version_yet(cli, tmp_path, board):
    uenv = root_tools(board)
    uenv.write_text("bootdelay=0\n")
    (board / "etc/sstarota/board.conf").write_text(
        "version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\nfw_setenv = /usr/sbin/fw_setenv\n")
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "sst_ver=2.1" in uenv.read_text().splitlines()


@pytest.mark.parametrize("how", ["config", "option"])
def test_a_board_told_so_installs_without_a_working_store(cli, tmp_path, board, how):
    conf = "version_file = /data/sstarota/version\n"
    extra = ["--version-store-optional"]
    if how == "config":
        conf += "version_store_optional = yes\n"
        extra = []
    (board / "etc/sstarota/board.conf").write_text(conf)
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", *extra, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (board / "etc/f.txt").read_text() == "new\n"
    assert not (board / "data").exists()


def test_no_downgrade_when_the_store_is_optional_but_readable(cli, tmp_path, board):
    (board / "etc/sstarota/board.conf").write_text("version_store_optional = yes\n")
    proc = otaunpack("-r", policy_pkg(cli, tmp_path, version="1.0"), "--root", board, "-q", text=False)
    refused_untouched(proc, board)


# ---------------------------------------------------------------------------- item 5: files, sizes


def test_a_fifo_board_config_is_refused_not_waited_on(cli, tmp_path, board):
    (board / "etc/sstarota/board.conf").unlink()
    os.mkfifo(str(board / "etc/sstarota/board.conf"))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)
    assert untouched(board)


def test_a_fifo_config_option_is_refused_not_waited_on(cli, tmp_path, board):
    fifo = tmp_path / "conf"
    os.mkfifo(str(fifo))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", "--config", fifo, text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)


def test_an_oversized_board_config_is_refused(cli, tmp_path, board):
    (board / "etc/sstarota/board.conf").write_text("# padding\n" * 100000)
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)


@pytest.mark.parametrize("where", ["keys-dir", "key-option"])
def test_a_fifo_key_file_is_refused_not_waited_on(cli, tmp_path, board, where):
    if where == "keys-dir":
        (board / "etc/sstarota/keys").mkdir()
        os.mkfifo(str(board / "etc/sstarota/keys/k.pem"))
        extra = []
    else:
        os.mkfifo(str(tmp_path / "k.pem"))
        extra = ["--key", tmp_path / "k.pem"]
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", *extra, text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)
    assert untouched(board)


def test_a_key_file_linked_out_of_the_root_is_not_read(cli, tmp_path, board):
    signing.generate(str(tmp_path / "k"), "p256")
    (board / "etc/sstarota/keys").mkdir()
    os.symlink(str(tmp_path / "k.pub"), str(board / "etc/sstarota/keys/k.pem"))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)
    assert untouched(board)


def test_an_oversized_key_file_is_refused(cli, tmp_path, board):
    (board / "etc/sstarota/keys").mkdir()
    (board / "etc/sstarota/keys/k.pem").write_bytes(b"x" * (1 << 20))
    proc = otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False)
    assert proc.returncode == 2, proc.stderr.decode()
    one_error(proc)


def test_a_fifo_version_file_is_refused_not_waited_on(cli, tmp_path, board):
    (board / "etc/sstarota/version").unlink()
    os.mkfifo(str(board / "etc/sstarota/version"))
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)


# ids given: pytest 8 makes a string's id of the string itself, and a 1 MiB id in
# PYTEST_CURRENT_TEST is an environment no subprocess can start with (E2BIG)
@pytest.mark.parametrize("content", ["9" * 5000 + "\n", "2.0 beta\n", "\xff\xfe\n", "1" * (1 << 20)],
                         ids=["5000-digits", "words", "not-utf8", "1MiB"])
def test_a_bad_installed_version_is_refused_in_one_line(cli, tmp_path, board, content):
    (board / "etc/sstarota/version").write_bytes(content.encode("latin-1"))
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)


def test_otapack_refuses_a_5000_digit_version_in_one_line(cli, tmp_path):
    code, _, err = cli.otapack("-c", tmp_path / "p", "--manifest", "--fw-version", "9" * 5000)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_version_order_needs_no_int_conversion():
    big = "9" * 5000
    assert version_key("1." + big) > version_key("1." + "9" * 4999)
    assert version_key("1.010") == version_key("1.10")
    order = ["1.0~rc1", "1.0", "1.0a", "1.0.1", "1.2", "1.10", "2"]
    assert sorted(order, key=version_key) == order


def test_a_keys_directory_with_anything_in_it_still_requires_signatures(cli, tmp_path, board):
    (board / "etc/sstarota/keys").mkdir()
    (board / "etc/sstarota/keys/release.crt").write_text("not a key file name\n")
    refused_untouched(otaunpack("-r", policy_pkg(cli, tmp_path), "--root", board, "-q", text=False), board)


def test_read_small_takes_regular_files_only_and_never_blocks(tmp_path):
    from sstarota.fsutil import read_small

    os.mkfifo(str(tmp_path / "fifo"))
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    os.symlink("ok", str(tmp_path / "link"))
    errs = {}
    for name in ("fifo", "big", "/dev/null", "link"):
        with pytest.raises(OSError) as exc:
            read_small(str(tmp_path / name), 100, follow=False)
        errs[name] = exc.value.errno
    assert errs == {"fifo": errno.EINVAL, "big": errno.EFBIG, "/dev/null": errno.EINVAL, "link": errno.EINVAL}
    assert read_small(str(tmp_path / "link"), 100) == b"x" * 100
