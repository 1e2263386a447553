"""Odd vendor command lines, as real SDK flows and a differential fuzz of the vendor's otapack
(0.4 and 1.6) write them (issue 21). Expected packages are packed here with struct from
docs/FORMAT.md (tests/support/records.py), not by our packer; exit codes and structured results, not prose."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import OP_ADD, OP_BLOCK, OP_UBI, OP_UPDATE, create, otaunpack, pkg04, pkg16, rec04, rec16, tree

BIN = Path(sys.executable).parent


def one_error_line(err):
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- 1: -t with its value missing


@pytest.mark.parametrize("fmt", ["0.4", "1.6"])
def test_an_empty_patsize_reads_as_the_vendors_getopt_reads_it(cli, tmp_path, fmt):
    """ota.mk with ipl_patsize commented out runs `-t -m 0 --file-update`: -t takes '-m' (not a
    number: 0xffffffff), the stray '0' is dropped, the mode stays 0; packed with a warning."""
    ipl = tmp_path / "IPL"
    ipl.write_bytes(b"ipl image\0" * 50)
    pkg = tmp_path / "p.bin"
    create(cli, pkg, fmt)
    code, out, err = cli.otapack("-s", ipl, "-d", "/boot/IPL", "-t", "-m", "0", "--file-update", "-a", pkg)
    assert code == 0, err
    assert err.count("warning") == 1 and "'-m'" in err and "'0'" in err
    if fmt == "0.4":
        want = pkg04([rec04("/boot/IPL", OP_UPDATE, ipl.read_bytes(), dst_size=0xFFFFFFFF)])
    else:
        want = pkg16([rec16("/boot/IPL", OP_UPDATE, ipl.read_bytes(), src=b"IPL", dst_size=0xFFFFFFFF)])
    assert pkg.read_bytes() == want


def test_a_value_that_is_no_option_is_still_refused(cli, tmp_path):
    ipl = tmp_path / "IPL"
    ipl.write_bytes(b"x")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    before = pkg.read_bytes()
    for argv in (["-t", "abc"], ["-t", "5", "stray"]):
        code, out, err = cli.otapack("-s", ipl, "-d", "/boot/IPL", *argv, "--file-update", "-a", pkg)
        assert code == 2
        one_error_line(err)
    assert pkg.read_bytes() == before


# ---------------------------------------------------------------- 7: --debug keeps the exit codes


def test_debug_adds_a_traceback_but_keeps_the_exit_code(tmp_path):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(b"not a package at all" * 10)
    proc = subprocess.run([str(BIN / "otapack"), "-a", str(pkg), "-d", "/x", "--file-delete", "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("otapack: error: ")
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run([str(BIN / "otaunpack"), "-r", str(pkg), "--root", str(root), "-t", str(tmp_path),
                           "--debug", "-q"], capture_output=True, text=True)
    assert proc.returncode == 3 and "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("otaunpack: error: ")
    assert os.listdir(root) == []


# ---------------------------------------------------------------- 8: --de is ambiguous, as the vendor's


def test_de_is_ambiguous_between_debug_and_default_mask(cli, tmp_path):
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg, "1.6")
    before = pkg.read_bytes()
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtd3 /dev/mtd4", "--de", "1 0", "--block-update", "-a", pkg)
    assert code == 2 and "--debug" in one_error_line(err) and "--default-mask" in err
    assert pkg.read_bytes() == before
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtd3 /dev/mtd4", "--def", "1 0", "--block-update", "-a", pkg)
    assert code == 0, err
    assert pkg.read_bytes() == pkg16([rec16("/dev/mtd3 /dev/mtd4", OP_BLOCK, b"kernel", src=b"k", masks=(1, 0))])


# ---------------------------------------------------------------- 9: the vendor's number grammar


@pytest.mark.parametrize("text", ["0x1_a4", "1_000", "0x+10", "+5", "-5", "0x-5", "\uff11\uff12", " 12", "12 ",
                                  "0x", "", "0x 1", "1e3", "0b1", "0o7", "٣"])
@pytest.mark.parametrize("option", ["-t", "-m"])
def test_numbers_outside_the_vendors_grammar_are_refused(cli, tmp_path, option, text):
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    before = pkg.read_bytes()
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtdblock3", option, text, "--block-update", "-a", pkg)
    assert code == 2
    one_error_line(err)
    assert pkg.read_bytes() == before


@pytest.mark.parametrize("text,value", [("0x1A4", 0x1A4), ("0X1a4", 0x1A4), ("420", 420), ("0", 0),
                                        ("0xFFFFFFFF", 0xFFFFFFFF)])
def test_numbers_in_the_vendors_grammar(cli, tmp_path, text, value):
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtdblock3", "-t", text, "-m", text, "--block-update",
                                 "-a", pkg)
    assert code == 0, err
    assert pkg.read_bytes() == pkg04([rec04("/dev/mtdblock3", OP_BLOCK, b"kernel", dst_size=value, mode=value)])


# ---------------------------------------------------------------- 6: a linked package is written through


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_package_is_written_through(cli, tmp_path, link):
    """An output directory links SStarOta.bin to the package: -c and -a write the file it names."""
    real = tmp_path / "build" / "SStarOta.bin"
    real.parent.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    linked = out / "SStarOta.bin"
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    if link == "symlink":
        linked.symlink_to(real)  # dangling until -c writes the file it names
        create(cli, linked)
    else:
        create(cli, real)
        os.link(real, linked)
    code, out_, err = cli.otapack("-s", img, "-d", "/dev/mtdblock3", "--block-update", "-a", linked)
    assert code == 0, err
    want = pkg04([rec04("/dev/mtdblock3", OP_BLOCK, b"kernel")])
    assert real.read_bytes() == want and linked.read_bytes() == want
    assert linked.is_symlink() == (link == "symlink")
    if link == "hardlink":
        assert os.stat(real).st_ino == os.stat(linked).st_ino
    assert sorted(p.name for p in real.parent.iterdir()) == ["SStarOta.bin"]  # no temp file left
    create(cli, linked)  # -c again: through the link too
    assert real.read_bytes() == pkg04([]) and linked.read_bytes() == pkg04([])


# ---------------------------------------------------------------- 11: '.' components install


def test_dot_components_in_targets_install_and_dotdot_does_not(tmp_path):
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/c/./x", OP_ADD, b"one", dst_size=3, mode=0o100644),
                           rec04("/customer/./lib/./a.so", OP_ADD, b"two", dst_size=3, mode=0o100644),
                           rec04("./rel", OP_ADD, b"three", dst_size=5, mode=0o100644)]))
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, "-q", console=True)
    assert proc.returncode == 0, proc.stderr
    assert (root / "c/x").read_bytes() == b"one" and (root / "customer/lib/a.so").read_bytes() == b"two"
    assert (root / "rel").read_bytes() == b"three"
    for target in ("/c/../x", "/c/x/.", "/c/x/"):
        bad = tmp_path / "bad.bin"
        bad.write_bytes(pkg04([rec04(target, OP_ADD, b"z", dst_size=1, mode=0o100644)]))
        empty = tmp_path / ("root-%d" % len(target))
        empty.mkdir()
        proc = otaunpack("-r", bad, "--root", empty, "-t", tmp_path, "-q", console=True)
        assert proc.returncode == 3, (target, proc.stderr)
        assert os.listdir(empty) == []




def assert_refused(cli, pkg, *argv, naming=None):
    before = pkg.read_bytes()
    listing = sorted(os.listdir(pkg.parent))
    code, out, err = cli.otapack(*argv)
    assert code == 2
    line = one_error_line(err)
    if naming:
        assert naming in line
    assert pkg.read_bytes() == before and sorted(os.listdir(pkg.parent)) == listing
    return line


# ---------------------------------------------------------------- 12: 1.6 tree names with whitespace


@pytest.mark.parametrize("case", ["name", "prefix"])
def test_1_6_tree_update_over_a_name_with_a_space_is_refused(cli, tmp_path, case):
    old = tree(tmp_path / "old", {"keep": b"k"})
    new = tree(tmp_path / "new", {"keep": b"k", ("my file" if case == "name" else "file"): b"x"})
    pkg = tmp_path / "p.bin"
    create(cli, pkg, "1.6")
    prefix = "/c" if case == "name" else "/c/my dir"
    assert_refused(cli, pkg, "-a", pkg, "-o", old, "-n", new, "-d", prefix, "--dir-update",
                   naming="my file" if case == "name" else "my dir")


def test_0_4_tree_update_keeps_names_with_a_space(cli, tmp_path):
    old = tree(tmp_path / "old", {"keep": b"k"})
    new = tree(tmp_path / "new", {"keep": b"k", "my file": b"x"})
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    code, out, err = cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/c", "--dir-update")
    assert code == 0, err
    mode = os.stat(new / "my file").st_mode
    assert pkg.read_bytes() == pkg04([rec04("/c/my file", OP_ADD, b"x", dst_size=1, mode=mode)])


# ---------------------------------------------------------------- 13: a file that becomes a directory


@pytest.mark.parametrize("old_files,new_files", [({"x": b"file"}, {"x/y": b"in a dir"}),
                                                 ({"x/y": b"in a dir"}, {"x": b"file"})])
def test_a_file_that_becomes_a_directory_is_refused(cli, tmp_path, old_files, new_files):
    old = tree(tmp_path / "old", old_files)
    new = tree(tmp_path / "new", new_files)
    for fmt in ("0.4", "1.6"):
        pkg = tmp_path / ("p%s.bin" % fmt)
        create(cli, pkg, fmt)
        line = assert_refused(cli, pkg, "-a", pkg, "-o", old, "-n", new, "-d", "/c", "--dir-update")
        assert str(old / "x") in line and str(new / "x") in line


# ---------------------------------------------------------------- 14: targets otaunpack refuses


@pytest.mark.parametrize("target", ["/c/x/", "/c/../x", "../x", "/c/x/.", "/a/. /b/x"])
@pytest.mark.parametrize("fmt", ["0.4", "1.6"])
def test_targets_the_installer_refuses_are_not_packed(cli, tmp_path, fmt, target):
    if fmt == "0.4" and " " in target:
        target = target.split()[0]  # 0.4: one target, spaces included
    src = tmp_path / "f"
    src.write_bytes(b"x")
    pkg = tmp_path / "p.bin"
    create(cli, pkg, fmt)
    assert_refused(cli, pkg, "-s", src, "-d", target, "--file-update", "-a", pkg)


def test_dir_prefix_with_dotdot_is_refused(cli, tmp_path):
    old = tree(tmp_path / "old", {})
    new = tree(tmp_path / "new", {"a": b"1"})
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    assert_refused(cli, pkg, "-a", pkg, "-o", old, "-n", new, "-d", "/c/..", "--dir-update")


# ---------------------------------------------------------------- 4: the legacy op flag -p


@pytest.mark.parametrize("p,op", [("0", OP_BLOCK), ("1", OP_UBI), ("2", OP_UPDATE)])
def test_legacy_op_flag_of_older_ota_mk(cli, tmp_path, p, op):
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtdblock3", "-t", "0x1000", "-p", p, "-m", "0", "-a", pkg)
    assert code == 0, err
    assert pkg.read_bytes() == pkg04([rec04("/dev/mtdblock3", op, b"kernel", dst_size=0x1000)])


@pytest.mark.parametrize("argv", [["-p", "3"], ["-p", "x"], ["-p", "0", "--ubi-update"], ["-p", "1", "--file-add"]])
def test_legacy_op_flag_refusals(cli, tmp_path, argv):
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg)
    assert_refused(cli, pkg, "-s", img, "-d", "/dev/mtdblock3", *argv, "-a", pkg)


# ---------------------------------------------------------------- 10: more masks than targets


def test_more_default_masks_than_targets_are_stored_as_the_vendor_does(cli, tmp_path):
    """The vendor's 1.6 stores every mask given (mask[2] = 0 here), used by no target."""
    img = tmp_path / "k"
    img.write_bytes(b"kernel")
    pkg = tmp_path / "p.bin"
    create(cli, pkg, "1.6")
    code, out, err = cli.otapack("-s", img, "-d", "/dev/mtd3 /dev/mtd4", "-t", "0x1000", "--default-mask", "1 0 0",
                                 "-m", "0", "--block-update", "-l", "kernel", "-a", pkg)
    assert code == 0, err
    assert err.count("warning") == 1
    assert pkg.read_bytes() == pkg16([rec16("/dev/mtd3 /dev/mtd4", OP_BLOCK, b"kernel", src=b"k", label=b"kernel",
                                                  dst_size=0x1000, masks=(1, 0, 0))])


# ---------------------------------------------------------------- 5: staged images stay sparse


def test_a_block_record_under_root_writes_only_the_images_data(tmp_path):
    """A staged 64 MiB partition image, mostly holes and zeros: the record replaces its start,
    the rest keeps its bytes, and the zeros are not written out (2.1 GB for an eMMC partition)."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    part = root / "dev" / "mmcblk0p1"
    with open(part, "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"keep me" * 1000)
        f.seek(40 << 20)
        f.write(bytes(1 << 20))  # written zeros: read back as zeros, need not be written again
    image = os.urandom(5000)
    pkg = tmp_path / "p.bin"
    pkg.write_bytes(pkg04([rec04("/dev/mmcblk0p1", OP_BLOCK, image, dst_size=64 << 20)]))
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, "-q", console=True)
    assert proc.returncode == 0, proc.stderr
    st = os.stat(part)
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < (1 << 20)  # the data only: 5000 + 7000 bytes and their blocks
    with open(part, "rb") as f:
        assert f.read(5000) == image
        assert f.read((32 << 20) - 5000) == bytes((32 << 20) - 5000)
        assert f.read(7000) == b"keep me" * 1000
        assert f.read() == bytes((32 << 20) - 7000)
