"""Every golden (and every package our packers make) installs under --root as it should."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import GOLDEN, copy_inputs, files_of, replay

FW_SETENV = """#!/bin/sh
echo "$@" >> "$OTA_ROOT/fw_setenv.log"
"""


def install_into(pkg, root, *extra, fake_fw_setenv=False, check=False):
    """Run otaunpack in a subprocess; with fake_fw_setenv inside a private mount namespace
    whose /etc has a fw_setenv that logs its arguments under $OTA_ROOT."""
    argv = [sys.executable, "-m", "sstarota.cli.otaunpack", "-x" if str(pkg).endswith(".gz") else "-r", str(pkg),
            "--root", str(root)] + [str(e) for e in extra]
    if fake_fw_setenv:
        ov = Path(str(root) + ".etc")
        (ov / "upper").mkdir(parents=True)
        (ov / "work").mkdir()
        (ov / "upper" / "fw_setenv").write_text(FW_SETENV)
        os.chmod(ov / "upper" / "fw_setenv", 0o755)
        script = ("mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc && exec \"$@\""
                  % (ov / "upper", ov / "work"))
        argv = ["unshare", "-m", "sh", "-c", script, "sh"] + argv
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def seed(version, name, root):
    """The board state a golden expects before it is installed."""
    inp = GOLDEN / version / "in"
    if name == "p1":
        (root / "config").mkdir(parents=True)
        (root / "config" / "obsolete.txt").write_text("old\n")
    if name == "p3":
        shutil.copytree(inp / "old", root / "config")
    if name == "p4":
        shutil.copytree(inp / "old", root / "customer")
        if version == "v1.6":
            (root / "dev").mkdir()
            shutil.copy(inp / "images" / "kernel.old", root / "dev" / "mtdblock4")
    if name == "p5":
        (root / "dev").mkdir()
        (root / "dev" / "mtd4").write_bytes(b"untouched")


def check(version, name, root, proc, all_targets=False):
    inp = GOLDEN / version / "in"
    files = files_of(root)
    def mode(rel):
        return stat.S_IMODE(os.stat(root / rel).st_mode)
    if name in ("p1", "p4", "p5"):  # packages with an end script
        assert "OTA UPDATA STATUS: 0" in proc.stdout and "end status=0" in proc.stdout
    if name in ("p1", "p3", "p5"):
        assert "begin" in proc.stdout.split("\n")
    if name == "p1":
        assert files.pop("dev/mtdblock4") == (inp / "images/kernel").read_bytes()
        assert files.pop("dev/ubi0_1") == (inp / "images/customer.ubifs").read_bytes()
        assert files.pop("config/app.conf") == (inp / "files/app.conf").read_bytes()
        assert mode("config/app.conf") == 0o644
        assert files.pop("config/app2.conf") == (inp / "files/app.conf").read_bytes()
        assert mode("config/app2.conf") == 0o1204  # -m 644 is decimal 644, as on the vendor's boards
        assert files.pop("customer/bin/new.bin") == (inp / "files/new.bin").read_bytes()
        assert mode("customer/bin/new.bin") == 0o755
        assert files.pop("fw_setenv.log") == b"kernel_file_size 0x18bb9\n"  # the script record ran
        assert files == {}  # obsolete.txt deleted, nothing else written
    elif name == "p2":
        assert files == {"dev/mtdblock0": (inp / "images/ipl_s.bin").read_bytes()}
    elif name in ("p3", "p4"):
        prefix = "config" if name == "p3" else "customer"
        expected = {prefix + "/" + k: v for k, v in files_of(inp / "new").items()}
        if name == "p4" and version == "v1.6":
            expected["dev/mtdblock4"] = (inp / "images/kernel").read_bytes()
        assert files == expected
        assert mode(prefix + "/sub/added.bin") == 0o755
        assert mode(prefix + "/added.txt") == 0o644
    elif name == "p5":
        assert files.pop("dev/mtd3") == (inp / "images/kernel").read_bytes()
        mtd4 = files.pop("dev/mtd4")
        assert mtd4 == ((inp / "images/kernel").read_bytes() if all_targets else b"untouched")
        assert files == {"config/app.conf": (inp / "files/app.conf").read_bytes()}


GOLDENS = [("v0.4", n) for n in ("p1", "p2", "p3", "p4")] + [("v1.6", n) for n in ("p1", "p2", "p3", "p4", "p5")]


@pytest.mark.parametrize("suffix", [".bin", ".bin.gz"])
@pytest.mark.parametrize("version,name", GOLDENS)
def test_golden_installs(tmp_path, version, name, suffix):
    root = tmp_path / "root"
    root.mkdir()
    seed(version, name, root)
    proc = install_into(GOLDEN / version / (name + suffix), root, "-t", tmp_path, fake_fw_setenv=name == "p1",
                     check=True)
    check(version, name, root, proc)
    left = sorted(os.listdir(tmp_path))
    if name == "p4":  # deltas without a manifest: the board's ledger of them stays (no --state-dir: in the
        # root's /var/lib/sstarota), so that a re-run knows they are done instead of patching twice; no stash
        assert sorted(os.listdir(root / "var/lib/sstarota")) == ["journal", "otaunpack.lock"]
    assert left == sorted(["root"] + (["root.etc"] if name == "p1" else []))  # no work files left


def test_all_targets_writes_mask_0_targets(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    seed("v1.6", "p5", root)
    proc = install_into(GOLDEN / "v1.6/p5.bin", root, "--all-targets", check=True)
    check("v1.6", "p5", root, proc, all_targets=True)


def _our_packages(cli, tmp_path, fmt):
    """Replay a golden's commands with our otapack in format fmt (0.3, 0.4, 1.6)."""
    version = "v1.6" if fmt == "1.6" else "v0.4"
    extra = []
    if fmt != "1.6":  # the vendor 0.4 cannot make this record; ours can
        extra = [["-a", "../p4.bin", "-o", "images/kernel.old", "-n", "images/kernel", "-d", "/dev/mtdblock4",
                  "-t", "0x500000", "--file-update-diff"]]
    work = tmp_path / "pack"
    work.mkdir()
    replay(cli, version, work, create_extra=["--format", fmt], extra_commands=extra)
    return version, work


@pytest.mark.parametrize("fmt", ["0.3", "0.4", "1.6"])
def test_our_packages_install(cli, tmp_path, fmt):
    version, work = _our_packages(cli, tmp_path, fmt)
    names = ["p1", "p2", "p3", "p4"] + (["p5"] if fmt == "1.6" else [])
    for name in names:
        root = tmp_path / ("root-" + name)
        root.mkdir()
        seed("v1.6", name, root)  # the v1.6 seeds include the raw kernel partition for p4
        proc = install_into(work / (name + ".bin"), root, fake_fw_setenv=name == "p1", check=True)
        check("v1.6", name, root, proc)


def test_legacy_package_from_otabinheader_installs(cli, tmp_path):
    inp = copy_inputs("v0.4", tmp_path / "in")
    pkg = tmp_path / "legacy.bin"
    assert cli.otabinheader("-c", pkg, "-b", inp / "begin.sh", "-e", inp / "end.sh")[0] == 0
    with open(pkg, "ab") as f:
        f.write((inp / "begin.sh").read_bytes() + (inp / "end.sh").read_bytes())
    for src, dst, size, op in (("images/kernel", "/dev/mtdblock4", "0x20000", "0"),
                               ("images/customer.ubifs", "/dev/ubi0_1", "0", "1"),
                               ("files/app.conf", "/config/app.conf", "0", "2")):
        assert cli.otabinheader("-a", pkg, "-s", inp / src, "-d", dst, "-t", size, "-p", op)[0] == 0
        with open(pkg, "ab") as f:
            f.write((inp / src).read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    proc = install_into(pkg, root, check=True)
    assert "end status=0" in proc.stdout
    files = files_of(root)
    kernel = (inp / "images/kernel").read_bytes()
    # legacy raw: 0xFF over dst_size, then the image
    assert files["dev/mtdblock4"] == kernel + b"\xff" * (0x20000 - len(kernel))
    assert files["dev/ubi0_1"] == (inp / "images/customer.ubifs").read_bytes()
    assert files["config/app.conf"] == (inp / "files/app.conf").read_bytes()
