"""Our otapack replays the vendor's COMMANDS.txt and writes the same bytes."""

import hashlib
import json
import subprocess

import pytest

from sstarota import package

from support import GOLDEN, VENDOR_TOOL_ID, replay


def golden_sha(version, name):
    for line in (GOLDEN / version / "SHA256SUMS").read_text().splitlines():
        digest, fname = line.split()
        if fname == name:
            return digest
    raise KeyError(name)


@pytest.mark.parametrize("version", ["v0.4", "v1.6"])
def test_golden_copies_are_intact(version):
    for path in sorted((GOLDEN / version).glob("p*")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == golden_sha(version, path.name), path


def test_v04_replay_is_byte_identical(cli, tmp_path):
    replay(cli, "v0.4", tmp_path)
    for n in range(1, 5):
        assert (tmp_path / ("p%d.bin" % n)).read_bytes() == (GOLDEN / "v0.4" / ("p%d.bin" % n)).read_bytes(), n


def test_v16_replay_with_vendor_tool_id_is_byte_identical(cli, tmp_path):
    replay(cli, "v1.6", tmp_path, create_extra=["--format", "1.6", "--tool-id", VENDOR_TOOL_ID])
    for n in range(1, 6):
        assert (tmp_path / ("p%d.bin" % n)).read_bytes() == (GOLDEN / "v1.6" / ("p%d.bin" % n)).read_bytes(), n
    assert (tmp_path / "p5.layout.txt").read_text() == (GOLDEN / "v1.6" / "p5.layout.txt").read_text()


def test_v16_replay_differs_only_in_tool_id_and_header_md5(cli, tmp_path):
    replay(cli, "v1.6", tmp_path, create_extra=["--format", "1.6"])
    for n in range(1, 6):
        ours = (tmp_path / ("p%d.bin" % n)).read_bytes()
        theirs = (GOLDEN / "v1.6" / ("p%d.bin" % n)).read_bytes()
        assert len(ours) == len(theirs)
        assert ours[16:64] == theirs[16:64]
        assert ours[128:] == theirs[128:]
        assert ours[64:128].rstrip(b"\0") == b"sstarota-0.1.0"
        assert ours[:16] == hashlib.md5(ours[16:128]).digest()


def test_v04_gains_file_update_diff_and_stock_bspatch_applies_it(cli, tmp_path):
    """The vendor 0.4 build exits 255 on --file-update-diff; ours makes the record."""
    extra = [["-a", "../p4.bin", "-o", "images/kernel.old", "-n", "images/kernel", "-d", "/dev/mtdblock4",
              "-t", "0x500000", "--file-update-diff"]]
    replay(cli, "v0.4", tmp_path, extra_commands=extra)
    reader, records = package.scan(str(tmp_path / "p4.bin"), strict=True)
    assert reader.header.generation == "0.4"
    assert len(records) == 6
    rec = records[-1]
    assert (rec.op_name, rec.dst, rec.dst_size, rec.mode) == ("file-diff", "/dev/mtdblock4", 0x500000, 0)
    # the first five records are the vendor's, unchanged
    golden = (GOLDEN / "v0.4" / "p4.bin").read_bytes()
    ours = (tmp_path / "p4.bin").read_bytes()
    assert ours[32:len(golden)] == golden[32:]
    patch = ours[len(golden) + 288:]
    assert patch[:8] == b"BSDIFF40"
    (tmp_path / "k.patch").write_bytes(patch)
    inp = tmp_path / "in" / "images"
    subprocess.run(["bspatch", inp / "kernel.old", tmp_path / "k.new", tmp_path / "k.patch"], check=True)
    assert (tmp_path / "k.new").read_bytes() == (inp / "kernel").read_bytes()


EXPECTED = {
    "p1": [("block", ["/dev/mtdblock4"], 101305, 0x500000, "0"),
           ("ubi", ["/dev/ubi0_1"], 69632, 0x1000000, "0"),
           ("file-update", ["/config/app.conf"], 1500, 0, "644"),
           ("file-update", ["/config/app2.conf"], 1500, 0, "1204"),
           ("file-add", ["/customer/bin/new.bin"], 2049, 2049, "100755"),
           ("file-delete", ["/config/obsolete.txt"], 0, 0, "0"),
           ("script", ["kernel_otaenv.sh"], 40, 40, "100755")],
    "p2": [("block", ["/dev/mtdblock0"], 16391, 0x10000, "0")],
    "p3": [("file-update", ["/config/changed.bin"], 20000, 0, "0"),
           ("file-update", ["/config/sub/conf.ini"], 950, 0, "0"),
           ("file-add", ["/config/added.txt"], 317, 317, "100644"),
           ("file-add", ["/config/sub/added.bin"], 1234, 1234, "100755"),
           ("file-delete", ["/config/removed.txt"], 0, 0, "0")],
    "p4_v0.4": [("file-diff", ["/customer/changed.bin"], 295, 0, "0"),
                ("file-diff", ["/customer/sub/conf.ini"], 524, 0, "0"),
                ("file-add", ["/customer/added.txt"], 317, 317, "100644"),
                ("file-add", ["/customer/sub/added.bin"], 1234, 1234, "100755"),
                ("file-delete", ["/customer/removed.txt"], 0, 0, "0")],
    "p5": [("block", ["/dev/mtd3", "/dev/mtd4"], 101305, 0x500000, "0"),
           ("file-update", ["/config/app.conf"], 1500, 0, "644")],
}
EXPECTED["p4_v1.6"] = [("file-diff", ["/dev/mtdblock4"], 3941, 0x500000, "0")] + EXPECTED["p4_v0.4"]


@pytest.mark.parametrize("suffix", [".bin", ".bin.gz"])
@pytest.mark.parametrize("version,name", [("v0.4", n) for n in ("p1", "p2", "p3", "p4")]
                         + [("v1.6", n) for n in ("p1", "p2", "p3", "p4", "p5")])
def test_info_lists_every_golden_record(cli, version, name, suffix):
    code, out, err = cli.otapack("--info", GOLDEN / version / (name + suffix), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["generation"] == version[1:]
    assert data["compressed"] == (suffix == ".bin.gz")
    key = name if name != "p4" else "p4_" + version
    got = [(r["op"], r["targets"], r["data_len"], r["dst_size"], r["mode"]) for r in data["records"]]
    assert got == EXPECTED[key]
    assert all(r["verdict"] == "ok" for r in data["records"])
    if version == "v1.6":
        assert data["tool_id"] == VENDOR_TOOL_ID
        if name == "p5":
            assert data["records"][0]["masks"] == [1, 0]
            assert data["records"][0]["label"] == "kernel"
            assert data["records"][1]["label"] == "appconf"
    code, text, err = cli.otapack("--info", GOLDEN / version / (name + suffix))
    assert code == 0
    assert text.count("\n") == 5 + len(EXPECTED[key]) + (1 if version == "v1.6" else 0)
