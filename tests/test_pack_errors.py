"""Every bad input: one line on stderr, exit 2, the package on disk unchanged."""

import gzip
import os
import subprocess
import sys

import pytest

from sstarota import package

from support import GOLDEN, copy_inputs


@pytest.fixture
def work(tmp_path, cli):
    inp = copy_inputs("v0.4", tmp_path / "in")
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "-b", inp / "begin.sh")[0] == 0
    assert cli.otapack("-a", pkg, "-s", inp / "files/app.conf", "-d", "/config/app.conf", "--file-update")[0] == 0
    return tmp_path, inp, pkg


def refused(cli, pkg, *argv, main="otapack"):
    before = pkg.read_bytes() if pkg.exists() else None
    listing = sorted(os.listdir(pkg.parent))
    code, out, err = getattr(cli, main)(*argv)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    if before is not None:
        assert pkg.read_bytes() == before
    assert sorted(os.listdir(pkg.parent)) == listing  # no temp file left behind
    return err


def test_image_larger_than_target_size(cli, work):
    tmp, inp, pkg = work
    err = refused(cli, pkg, "-a", pkg, "-s", inp / "images/kernel", "-d", "/dev/mtdblock4", "-t", "0x1000",
                  "--block-update")
    assert "larger than its target size -t 4096 (0x1000)" in err


def test_new_image_of_diff_larger_than_target_size(cli, work):
    tmp, inp, pkg = work
    err = refused(cli, pkg, "-a", pkg, "-o", inp / "images/kernel.old", "-n", inp / "images/kernel",
                  "-d", "/dev/mtdblock4", "-t", "100", "--file-update-diff")
    assert "larger than its target size" in err


def test_target_path_longer_than_its_field(cli, work):
    tmp, inp, pkg = work
    err = refused(cli, pkg, "-a", pkg, "-d", "/" + "a" * 255, "--file-delete")
    assert "256 bytes do not fit a 256-byte field" in err
    # 255 bytes fit
    assert cli.otapack("-a", pkg, "-d", "/" + "a" * 254, "--file-delete")[0] == 0


def test_source_over_the_format_size_limit(cli, tmp_path):
    pkg = tmp_path / "p03.bin"
    assert cli.otapack("-c", pkg, "--format", "0.3")[0] == 0
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate((1 << 32) + 1)  # sparse: nothing is read before the limit check
    err = refused(cli, pkg, "-a", pkg, "-s", big, "-d", "/dev/mtdblock2", "--block-update")
    assert "exceed the 0.3 format's limit" in err


def test_append_refuses_a_file_that_is_not_a_package(cli, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(5000))
    src = GOLDEN / "v0.4/in/files/app.conf"
    err = refused(cli, junk, "-a", junk, "-s", src, "-d", "/x", "--file-update")
    assert "not a SigmaStar OTA package" in err


@pytest.mark.parametrize("offset", [0, 12, 20, 40])
def test_append_refuses_a_header_checksum_mismatch(cli, work, offset):
    tmp, inp, pkg = work
    raw = bytearray(pkg.read_bytes())
    raw[offset] ^= 0x01
    pkg.write_bytes(bytes(raw))
    err = refused(cli, pkg, "-a", pkg, "-s", inp / "files/app.conf", "-d", "/x", "--file-update")
    assert "checksum mismatch" in err or "truncated" in err or "describes" in err


def test_append_refuses_1_6_header_corruption(cli, tmp_path):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes((GOLDEN / "v1.6/p2.bin").read_bytes())
    raw = bytearray(pkg.read_bytes())
    raw[70] ^= 0x20
    pkg.write_bytes(bytes(raw))
    err = refused(cli, pkg, "-a", pkg, "-d", "/x", "-s", GOLDEN / "v1.6/in/files/app.conf", "--file-delete")
    assert "1.6 header checksum mismatch" in err


def test_append_refuses_truncated_and_gzip_packages(cli, tmp_path):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes((GOLDEN / "v0.4/p2.bin").read_bytes()[:-1])
    err = refused(cli, pkg, "-a", pkg, "-d", "/x", "--file-delete")
    assert "truncated or with trailing bytes" in err
    gz = tmp_path / "p.bin.gz"
    gz.write_bytes((GOLDEN / "v0.4/p2.bin.gz").read_bytes())
    err = refused(cli, gz, "-a", gz, "-d", "/x", "--file-delete")
    assert "gzip" in err


@pytest.mark.parametrize("argv", [
    ["-s", "files/app.conf", "-d", "/c/a", "--file-update", "-l", "label"],
    ["-s", "images/kernel", "-d", "/dev/mtd3", "--block-update", "--default-mask", "1"],
])
def test_1_6_only_options_on_0_4(cli, work, argv):
    tmp, inp, pkg = work
    err = refused(cli, pkg, "-a", pkg, *[str(inp / a) if a.startswith(("files/", "images/")) else a for a in argv])
    assert "1.6" in err


def test_bad_masks_and_too_many_targets(cli, tmp_path):
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "--format", "1.6")[0] == 0
    src = GOLDEN / "v1.6/in/images/ipl_s.bin"
    refused(cli, pkg, "-a", pkg, "-s", src, "-d", "/dev/mtd1", "--block-update", "--default-mask", "1 2")
    # more masks than targets are packed, as the vendor packs them: test_vendor_cli_odd.py
    refused(cli, pkg, "-a", pkg, "-s", src, "-d", " ".join("/dev/mtd%d" % i for i in range(17)), "--block-update")


def test_symlink_in_tree_is_named_unless_skipped(cli, work):
    tmp, inp, pkg = work
    os.symlink("same.txt", inp / "new" / "link.txt")
    err = refused(cli, pkg, "-a", pkg, "-o", inp / "old", "-n", inp / "new", "-d", "/config", "--dir-update")
    assert "link.txt is a symlink" in err and "--skip-special" in err
    code, out, err = cli.otapack("-a", pkg, "-o", inp / "old", "-n", inp / "new", "-d", "/config", "--dir-update",
                                 "--skip-special")
    assert code == 0
    assert "link.txt" in err  # the skip is reported
    _, records = package.scan(str(pkg), strict=True)
    assert all("link" not in r.dst for r in records)


def test_fifo_in_tree_is_a_special_file(cli, work):
    tmp, inp, pkg = work
    os.mkfifo(inp / "old" / "pipe")
    err = refused(cli, pkg, "-a", pkg, "-o", inp / "old", "-n", inp / "new", "-d", "/config", "--dir-update")
    assert "pipe is a special file" in err


def test_missing_source_and_missing_options(cli, work):
    tmp, inp, pkg = work
    assert "cannot read source" in refused(cli, pkg, "-a", pkg, "-s", tmp / "nope", "-d", "/x", "--block-update")
    assert "needs -s SOURCE" in refused(cli, pkg, "-a", pkg, "-d", "/x", "--block-update")
    assert "needs an operation" in refused(cli, pkg, "-a", pkg, "-s", inp / "files/app.conf", "-d", "/x")
    assert "one operation per call" in refused(cli, pkg, "-a", pkg, "-s", inp / "files/app.conf", "-d", "/x",
                                               "--file-add", "--file-update")
    assert "no such option" in refused(cli, pkg, "-a", pkg, "--bogus").lower()
    assert "is not a number" in refused(cli, pkg, "-a", pkg, "-s", inp / "files/app.conf", "-d", "/x", "-t", "12k",
                                        "--block-update")
    assert "--format goes with -c" in refused(cli, pkg, "-a", pkg, "-d", "/x", "--file-delete", "--format", "1.6")


def test_legacy_33rd_slot_and_long_target(cli, tmp_path):
    pkg = tmp_path / "legacy.bin"
    src = GOLDEN / "v0.4/in/files/app.conf"
    assert cli.otabinheader("-c", pkg)[0] == 0
    for i in range(32):
        assert cli.otabinheader("-a", pkg, "-s", src, "-d", "/dev/mtdblock%d" % i, "-t", "0x1000", "-p", "0")[0] == 0
    err = refused(cli, pkg, "-a", pkg, "-s", src, "-d", "/dev/mtdblock32", "-p", "0", main="otabinheader")
    assert "only 32 slots" in err
    pkg2 = tmp_path / "legacy2.bin"
    assert cli.otabinheader("-c", pkg2)[0] == 0
    err = refused(cli, pkg2, "-a", pkg2, "-s", src, "-d", "/" + "d" * 63, "-p", "2", main="otabinheader")
    assert "64-byte field" in err
    refused(cli, pkg2, "-a", pkg2, "-s", src, "-d", "/dev/x", "-t", "10", "-p", "0", main="otabinheader")
    refused(cli, pkg2, "-a", pkg2, "-s", src, "-d", "/dev/x", "-p", "7", main="otabinheader")


def test_mode_with_leading_zero_warns_and_is_read_as_decimal(cli, work):
    tmp, inp, pkg = work
    code, out, err = cli.otapack("-a", pkg, "-s", inp / "files/app.conf", "-d", "/c/x", "-m", "0644", "--file-update")
    assert code == 0
    assert "0644 is read as decimal 644 (mode 0o1204)" in err and "-m 0x1a4" in err
    _, records = package.scan(str(pkg), strict=True)
    assert records[-1].mode == 644
    code, out, err = cli.otapack("-a", pkg, "-s", inp / "files/app.conf", "-d", "/c/y", "-m", "0x1a4", "--file-update")
    assert code == 0 and err == ""


def test_file_delete_with_and_without_source_in_every_format(cli, tmp_path):
    src = GOLDEN / "v1.6/in/files/app.conf"
    for fmt in ("0.3", "0.4", "1.6"):
        pkg = tmp_path / ("d%s.bin" % fmt)
        assert cli.otapack("-c", pkg, "--format", fmt)[0] == 0
        assert cli.otapack("-a", pkg, "-d", "/config/a.txt", "--file-delete")[0] == 0
        assert cli.otapack("-a", pkg, "-s", src, "-d", "/config/b.txt", "--file-delete")[0] == 0
        reader, records = package.scan(str(pkg), strict=True)
        assert reader.header.generation == fmt
        assert [(r.op_name, r.dst, r.data_len) for r in records] == [
            ("file-delete", "/config/a.txt", 0), ("file-delete", "/config/b.txt", 0)]


def test_gzip_is_reproducible_and_streams(cli, tmp_path):
    for keep in (True, False):
        pkg = tmp_path / ("g%d.bin" % keep)
        pkg.write_bytes((GOLDEN / "v0.4/p1.bin").read_bytes())
        argv = ["--gzip", pkg] + (["-k"] if keep else [])
        assert cli.otapack(*argv)[0] == 0
        gz = tmp_path / ("g%d.bin.gz" % keep)
        raw = gz.read_bytes()
        assert raw[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
        assert raw[4:8] == bytes(4)  # mtime 0
        assert gzip.decompress(raw) == (GOLDEN / "v0.4/p1.bin").read_bytes()
        assert pkg.exists() == keep
    assert (tmp_path / "g1.bin.gz").read_bytes() == (tmp_path / "g0.bin.gz").read_bytes()


def test_gzip_uses_gzips_default_level(cli, tmp_path):
    """Level 6, as the vendor flow's plain `gzip`: the deflate stream is zlib's at 6, and the
    header's XFL byte says neither 'best' (2) nor 'fastest' (4)."""
    import zlib

    data = (GOLDEN / "v1.6/p5.bin").read_bytes()
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(data)
    assert cli.otapack("--gzip", pkg)[0] == 0
    raw = (tmp_path / "p.bin.gz").read_bytes()
    assert raw[8] == 0
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert raw[10:-8] == z.compress(data) + z.flush()
    assert raw[10:-8] != zlib.compress(data, 9)[2:-4]


def test_failed_append_leaves_package_and_no_temp(cli, work, monkeypatch):
    tmp, inp, pkg = work
    from sstarota import packer

    before = pkg.read_bytes()

    def boom(self):
        yield b"x" * 100
        raise KeyboardInterrupt

    monkeypatch.setattr(packer.FileData, "chunks", boom)
    code, out, err = cli.otapack("-a", pkg, "-s", inp / "images/kernel", "-d", "/dev/mtdblock4", "--block-update")
    assert code == 130
    assert pkg.read_bytes() == before
    assert sorted(p.name for p in tmp.iterdir()) == ["in", "p.bin"]


def test_sigkill_during_append_leaves_previous_package_valid(tmp_path):
    """A real SIGKILL while the record's data is streamed: the package is the old one."""
    src = GOLDEN / "v0.4/p2.bin"
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(src.read_bytes())
    code = (
        "import os, signal, sys\n"
        "from sstarota import packer\n"
        "orig = packer.FileData.chunks\n"
        "def chunks(self):\n"
        "    for i, piece in enumerate(orig(self)):\n"
        "        yield piece\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "packer.FileData.chunks = chunks\n"
        "from sstarota.cli.otapack import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "-a", str(pkg), "-s", str(GOLDEN / "v0.4/in/images/kernel"),
                           "-d", "/dev/mtdblock4", "--block-update"], capture_output=True)
    assert proc.returncode == -9
    assert pkg.read_bytes() == src.read_bytes()
    reader, records = package.scan(str(pkg), strict=True)
    assert len(records) == 1
