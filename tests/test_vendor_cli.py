"""The vendor's otapack command line and the bytes it writes, where a differential run of
the vendor binaries (0.4 and 1.6) against ours found them apart (issue 11, points 6-12).

Expected packages are packed here with struct from docs/FORMAT.md (tests/support/records.py)."""

import os
import random

import bsdiff4
import pytest

from sstarota import package

from support import (OP_ADD, OP_BLOCK, OP_DELETE, OP_DIFF, OP_UBI, OP_UPDATE, TOOL_ID, create, pkg04, pkg16, rec04,
                     rec16, tree)





def append(cli, pkg, *argv):
    code, out, err = cli.otapack("-a", pkg, *argv)
    assert code == 0, err
    return err


# ---------------------------------------------------------------- 6: whitespace in a 0.4 target


def test_0_4_target_with_whitespace_is_one_target_written_as_it_is(cli, tmp_path):
    src = tmp_path / "app.conf"
    src.write_bytes(b"x=1\n")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    append(cli, pkg, "-s", src, "-d", "/config/my file", "-m", "0x1a4", "--file-update")
    append(cli, pkg, "-s", src, "-d", "/config/tab\there", "--file-update")
    assert pkg.read_bytes() == pkg04([rec04("/config/my file", OP_UPDATE, b"x=1\n", mode=0x1a4),
                                      rec04("/config/tab\there", OP_UPDATE, b"x=1\n")])


def test_0_4_dir_update_over_names_with_whitespace(cli, tmp_path):
    old = tree(tmp_path / "old", {"a b.txt": b"old", "gone x": b"g", "same": b"s"})
    new = tree(tmp_path / "new", {"a b.txt": b"new!", "tab\tname": b"t", "same": b"s"})
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    append(cli, pkg, "-o", old, "-n", new, "-d", "/cfg", "--dir-update")
    mode = os.stat(new / "tab\tname").st_mode
    assert pkg.read_bytes() == pkg04([rec04("/cfg/a b.txt", OP_UPDATE, b"new!"),
                                      rec04("/cfg/tab\tname", OP_ADD, b"t", dst_size=1, mode=mode),
                                      rec04("/cfg/gone x", OP_DELETE)])


# ---------------------------------------------------------------- 7: the vendor's long options


def test_vendor_long_options_0_4(cli, tmp_path):
    begin, end, img = tmp_path / "b.sh", tmp_path / "e.sh", tmp_path / "kernel"
    begin.write_bytes(b"echo begin\n")
    end.write_bytes(b"echo end\n")
    img.write_bytes(bytes(range(256)) * 3)
    pkg = tmp_path / "p.bin"
    code, out, err = cli.otapack("--create=%s" % pkg, "--begin-script", begin, "--end-script=%s" % end)
    assert code == 0, err
    assert cli.otapack("--append", pkg, "--src-file=%s" % img, "--dst-file", "/dev/mtdblock4",
                       "--dst-file-size", "0x1000", "--file-mode=0x1a4", "--block-up")[0] == 0
    # unambiguous abbreviations of the vendor's names (--dst-file is exact, not a prefix of --dst-file-size)
    assert cli.otapack("--app", pkg, "--src", img, "--dst-file", "/dev/mtdblock5", "--dst-file-s=0x2000",
                       "--file-m", "7", "--ub")[0] == 0
    assert pkg.read_bytes() == pkg04([rec04("/dev/mtdblock4", OP_BLOCK, img.read_bytes(), dst_size=0x1000, mode=0x1a4),
                                      rec04("/dev/mtdblock5", OP_UBI, img.read_bytes(), dst_size=0x2000, mode=7)],
                                     b"echo begin\n", b"echo end\n")


def test_vendor_long_options_1_6_diff(cli, tmp_path):
    old, new = tmp_path / "kernel.old", tmp_path / "kernel"
    rnd = random.Random(7)
    base = bytes(rnd.getrandbits(8) for _ in range(4000))
    old.write_bytes(base)
    new.write_bytes(base[:1000] + b"patched" + base[1007:])
    pkg = tmp_path / "p.bin"
    code, out, err = cli.otapack("--cr", pkg, "--format", "1.6", "--tool-id", TOOL_ID.decode())
    assert code == 0, err
    append(cli, pkg, "--diff-old", old, "--diff-new=%s" % new, "--dst-file", "/dev/mtd3 /dev/mtd4",
           "--dst-file-size", "0x10000", "--default-m", "1 0", "--add-log=kernel", "--file-update-d")
    # a value that looks like an option is the option's value, never expanded
    append(cli, pkg, "--src-file", new, "-d", "/dev/mtd5", "-l", "--file", "--block-update")
    patch = bsdiff4.diff(old.read_bytes(), new.read_bytes())
    assert pkg.read_bytes() == pkg16([
        rec16("/dev/mtd3 /dev/mtd4", OP_DIFF, patch, src=b"kernel.diff", label=b"kernel", dst_size=0x10000,
              masks=(1, 0)),
        rec16("/dev/mtd5", OP_BLOCK, new.read_bytes(), src=b"kernel", label=b"--file")])


@pytest.mark.parametrize("prefix, names", [
    ("--file", ["--file-add", "--file-delete", "--file-mode", "--file-update", "--file-update-diff"]),
    ("--dst", ["--dst-file", "--dst-file-size"]),
    ("--diff", ["--diff-new", "--diff-old"]),
])
def test_ambiguous_abbreviation_is_a_usage_error_naming_the_candidates(cli, tmp_path, prefix, names):
    code, out, err = cli.otapack("-a", tmp_path / "p.bin", prefix, "x")
    assert code == 2
    assert "ambiguous" in err and err.count("\n") == 1
    for name in names:
        assert name in err


def test_a_prefix_unique_among_the_vendor_options_wins_and_values_are_never_expanded():
    from sstarota.cli.common import expand_prefixes

    takes = {"--ubi-update": False, "--uninstall-dropin": True, "--dst-file": True, "-d": True}
    vendor = ("--ubi-update", "--dst-file")
    assert expand_prefixes(["--u", "-d", "--u", "--dst=--u", "--", "--u"], takes, vendor) == [
        "--ubi-update", "-d", "--u", "--dst-file=--u", "--", "--u"]
    assert expand_prefixes(["--un", "--u"], takes, vendor) == ["--uninstall-dropin", "--u"]


def test_help_lists_and_accepts_the_vendor_long_names(cli):
    code, out, err = cli.otapack("--help")
    assert code == 0
    for name in ("--create", "--append", "--src-file", "--dst-file", "--dst-file-size", "--file-mode",
                 "--diff-old", "--diff-new", "--begin-script", "--end-script", "--add-log"):
        assert name in out
    assert cli.otapack("--he")[1] == out


# ---------------------------------------------------------------- 8: a dir prefix ending in /


@pytest.mark.parametrize("prefix", ["/customer/", "/"])
def test_dir_prefix_with_a_trailing_slash_is_joined_as_the_vendor_joins_it(cli, tmp_path, prefix):
    old = tree(tmp_path / "old", {"x": b"1", "gone": b"g"})
    new = tree(tmp_path / "new", {"x": b"22", "sub/y": b"3"})
    mode = os.stat(new / "sub/y").st_mode
    for fmt in ("0.4", "1.6"):
        pkg = tmp_path / ("p%s.bin" % fmt)
        create(cli, pkg, fmt)
        append(cli, pkg, "-o", old, "-n", new, "-d", prefix, "--dir-update")
        join = prefix + "/"
        if fmt == "0.4":
            want = pkg04([rec04(join + "x", OP_UPDATE, b"22"),
                          rec04(join + "sub/y", OP_ADD, b"3", dst_size=1, mode=mode),
                          rec04(join + "gone", OP_DELETE)])
        else:
            want = pkg16([rec16(join + "x", OP_UPDATE, b"22", src=b"x"),
                          rec16(join + "sub/y", OP_ADD, b"3", src=b"y", dst_size=1, mode=mode),
                          rec16(join + "gone", OP_DELETE, b"", src=b"gone")])
        assert pkg.read_bytes() == want, fmt


# ---------------------------------------------------------------- 9: 1.6 file-delete source name


def test_1_6_file_delete_source_name_is_the_text_after_the_last_slash(cli, tmp_path):
    src = tmp_path / "any.txt"
    src.write_bytes(b"unused")
    pkg = tmp_path / "p.bin"
    create(cli, pkg, "1.6")
    for dst in ("/a.txt", "/m/n1 /m/n2", "/a b/c"):
        append(cli, pkg, "-s", src, "-d", dst, "--file-delete")
    old = tree(tmp_path / "old", {"d/x": b"1", "keep": b"k"})
    new = tree(tmp_path / "new", {"keep": b"k"})
    append(cli, pkg, "-o", old, "-n", new, "-d", "/p", "--dir-update")
    # (a tree name with whitespace is refused in 1.6: test_vendor_cli_odd.py)
    assert pkg.read_bytes() == pkg16([rec16("/a.txt", OP_DELETE, src=b"/a.txt"),
                                      rec16("/m/n1 /m/n2", OP_DELETE, src=b"n2"),
                                      rec16("/a b/c", OP_DELETE, src=b"c"),
                                      rec16("/p/d/x", OP_DELETE, src=b"x")])


# ---------------------------------------------------------------- 10: -t against the new image


@pytest.mark.parametrize("threshold", ["off", "3"])
def test_size_limit_applies_to_the_new_image_not_the_patch(cli, tmp_path, threshold):
    rnd = random.Random(3)
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    old.write_bytes(bytes(rnd.getrandbits(8) for _ in range(300)))
    new.write_bytes(bytes(rnd.getrandbits(8) for _ in range(100)))
    patch = bsdiff4.diff(old.read_bytes(), new.read_bytes())
    assert len(patch) > 100
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    append(cli, pkg, "-o", old, "-n", new, "-d", "/dev/mtdblock4", "-t", "100", "--patch-threshold", threshold,
           "--file-update-diff")
    assert pkg.read_bytes() == pkg04([rec04("/dev/mtdblock4", OP_DIFF, patch, dst_size=100)])


# ---------------------------------------------------------------- 12: decided differences


def test_dot_entries_are_packed_and_otapack_says_the_vendor_skips_them(cli, tmp_path):
    old = tree(tmp_path / "old", {"..z": b"1", ".gone": b"g", "plain": b"p"})
    new = tree(tmp_path / "new", {"..z": b"2", ".hidden": b"h", ".d/f": b"f", "plain": b"p"})
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    err = append(cli, pkg, "-o", old, "-n", new, "-d", "/c", "--dir-update")
    mode = os.stat(new / ".hidden").st_mode
    assert pkg.read_bytes() == pkg04([rec04("/c/..z", OP_UPDATE, b"2"),
                                      rec04("/c/.d/f", OP_ADD, b"f", dst_size=1, mode=mode),
                                      rec04("/c/.hidden", OP_ADD, b"h", dst_size=1, mode=mode),
                                      rec04("/c/.gone", OP_DELETE)])
    assert err.count("\n") == 1 and "vendor" in err
    for name in ("..z", ".d/f", ".hidden", ".gone"):
        assert name in err


def test_dst_size_of_2_32_or_more_is_stored_not_wrapped(cli, tmp_path):
    img = tmp_path / "img"
    img.write_bytes(b"\xaa" * 10)
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    append(cli, pkg, "-s", img, "-d", "/dev/mtdblock2", "-t", "0x100000000", "--block-update")
    assert pkg.read_bytes() == pkg04([rec04("/dev/mtdblock2", OP_BLOCK, b"\xaa" * 10, dst_size=1 << 32)])


# ---------------------------------------------------------------- 11: reading what the vendor writes


@pytest.fixture
def vendor16(tmp_path):
    """A 1.6 package as the vendor writes it: a tab and a newline inside target names, and a
    record with 18 targets (masks only for the first 16)."""
    many = " ".join("/dev/t%d" % i for i in range(18))
    pkg = tmp_path / "vendor16.bin"
    pkg.write_bytes(pkg16([rec16(b"/a\tb /c\nd", OP_BLOCK, b"data", src=b"s", masks=(1, 0)),
                           rec16(many, OP_BLOCK, b"xy", src=b"img", masks=[1, 0] * 8)]))
    return pkg


def test_reader_splits_targets_on_spaces_only_and_reads_more_than_16(vendor16):
    reader, records = package.scan(str(vendor16), strict=True)
    first, many = records
    assert first.targets == ["/a\tb", "/c\nd"]
    assert first.target_masks() == [("/a\tb", 1), ("/c\nd", 0)]
    assert len(many.targets) == 18
    assert many.target_masks()[14:] == [("/dev/t14", 1), ("/dev/t15", 0), ("/dev/t16", None), ("/dev/t17", None)]
    assert many.unmasked_targets() == ["/dev/t16", "/dev/t17"]
    assert first.unmasked_targets() == []


def test_layout_and_info_of_a_vendor_package(cli, tmp_path, vendor16):
    layout = tmp_path / "layout.txt"
    code, out, err = cli.otapack("--out-layout", layout, "-r", vendor16)
    assert code == 0, err
    want = "0,s,/a\tb,0x1\n0,s,/c\nd,0x0\n" + "".join("1,img,/dev/t%d,0x%d\n" % (i, 1 - i % 2) for i in range(16))
    assert layout.read_text() == want
    code, out, err = cli.otapack("--info", vendor16, "--json")
    assert code == 0, err
    assert '"/dev/t17"' in out and "null" in out
