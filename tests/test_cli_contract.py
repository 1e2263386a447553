"""Every command installs as a console script, has --help, and maps errors to exit codes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import package

from support import GOLDEN

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", ["otapack", "otabinheader", "otaunpack"])
def test_console_script_help(command):
    exe = BIN / command
    assert exe.exists(), "%s is not installed next to %s" % (command, sys.executable)
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "Exit codes" in proc.stdout
    proc = subprocess.run([str(exe), "--no-such-flag"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_legacy_package_roundtrip_with_cat(cli, tmp_path):
    """The vendor guide's recipe: otabinheader writes the header, cat appends the rest."""
    inp = GOLDEN / "v0.4" / "in"
    pkg = tmp_path / "SStarOta.bin"
    assert cli.otabinheader("-c", pkg, "-b", inp / "begin.sh", "-e", inp / "end.sh")[0] == 0
    assert pkg.stat().st_size == 2584
    with open(pkg, "ab") as f:
        f.write((inp / "begin.sh").read_bytes() + (inp / "end.sh").read_bytes())
    parts = [("images/kernel", "/dev/mtdblock4", "0x500000", "0"),
             ("images/customer.ubifs", "/dev/ubi0_1", "0x1000000", "ubi"),
             ("files/app.conf", "/config/app.conf", "0", "2")]
    for src, dst, size, op in parts:
        assert cli.otabinheader("-a", pkg, "-s", inp / src, "-d", dst, "-t", size, "-p", op)[0] == 0
        with open(pkg, "ab") as f:
            f.write((inp / src).read_bytes())
    reader, records = package.scan(str(pkg), strict=True)
    assert reader.header.generation == "legacy"
    assert reader.begin_script == (inp / "begin.sh").read_bytes()
    assert [(r.op_name, r.dst, r.data_len, r.dst_size) for r in records] == [
        ("raw", "/dev/mtdblock4", 101305, 0x500000), ("ubi", "/dev/ubi0_1", 69632, 0x1000000),
        ("file", "/config/app.conf", 1500, 0)]
    code, out, err = cli.otapack("--info", pkg)
    assert code == 0 and "generation: legacy" in out


def test_out_layout_for_a_0_4_package(cli, tmp_path):
    out = tmp_path / "layout.txt"
    assert cli.otapack("--out-layout", out, "-r", GOLDEN / "v0.4/p3.bin")[0] == 0
    assert out.read_text().splitlines() == [
        "0,changed.bin,/config/changed.bin,0x1", "1,conf.ini,/config/sub/conf.ini,0x1",
        "2,added.txt,/config/added.txt,0x1", "3,added.bin,/config/sub/added.bin,0x1",
        "4,removed.txt,/config/removed.txt,0x1"]


def test_info_reports_a_bad_record_checksum(cli, tmp_path):
    pkg = tmp_path / "p.bin"
    raw = bytearray((GOLDEN / "v0.4/p1.bin").read_bytes())
    raw[-1] ^= 0xFF  # last byte of the script record's data
    pkg.write_bytes(bytes(raw))
    code, out, err = cli.otapack("--info", pkg)
    assert code == 2
    assert out.splitlines()[-1].split()[5] == "BAD"
    assert "record(s) fail their checksum: 6" in err


def test_build_equals_create_plus_appends(tmp_path):
    from sstarota import packer

    inp = GOLDEN / "v1.6" / "in"
    def specs():
        return (packer.operation_specs("block-update", src=str(inp / "images/kernel"), dst="/dev/mtd3 /dev/mtd4",
                                               size=0x500000, masks=[1, 0], label="kernel")
                + packer.operation_specs("dir-update-diff", old=str(inp / "old"), new=str(inp / "new"), dst="/c"))
    for fmt in ("0.4", "1.6"):
        if fmt == "0.4":
            one = packer.operation_specs("file-add", src=str(inp / "files/new.bin"), dst="/x")
            two = packer.operation_specs("dir-update", old=str(inp / "old"), new=str(inp / "new"), dst="/c")
        else:
            one, two = specs()[:1], specs()[1:]
        a, b = tmp_path / ("a%s" % fmt), tmp_path / ("b%s" % fmt)
        packer.build(str(a), one + two, fmt, str(inp / "begin.sh"), None)
        packer.create(str(b), fmt, str(inp / "begin.sh"), None)
        packer.append(str(b), one)
        packer.append(str(b), two)
        assert a.read_bytes() == b.read_bytes()


def test_scripts_bench_loads_and_offers_every_benchmark():
    """scripts/bench is run by hand and by no test: its module must load (a benchmark defined
    after the table that names it broke every one of them once) and offer each benchmark."""
    project = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(project / "scripts" / "bench"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("pack", "unpack", "delta", "sign", "fb", "board", "board-arm", "board-footprint", "incremental",
                 "peers", "ab", "all"):
        assert re.search(r"[{,]%s[,}]" % re.escape(name), r.stdout.replace("\n", "").replace(" ", "")), name


def test_otapack_help_loads_neither_the_packer_nor_the_format():
    """make loops call otapack once per partition: --help (and the parser) stay light."""
    probe = ("import sys\nfrom sstarota.cli import otapack\n"
             "try:\n    otapack.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in ('sstarota', 'construct'))))")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    mods = p.stdout.splitlines()[-1].split()
    assert "construct" not in mods and not [m for m in mods if m.startswith(("sstarota.packer", "sstarota.schema"))]
    assert "sstarota.opflags" in mods and "sstarota.defaults" in mods
