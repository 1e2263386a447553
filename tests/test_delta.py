"""Deltas: interop with stock bsdiff/bspatch both ways, realistic pairs, the manifest's
source checks, the threshold fallback."""

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sstarota import manifest, packer, package, schema

from support import copy_inputs, files_of, otaunpack

PROJECT = Path(__file__).parent.parent


def records_with_data(pkg):
    """[(Record, data bytes)] of a package."""
    with open(pkg, "rb") as f:
        reader = package.PackageReader(f, str(pkg))
        reader.open()
        out = []
        for rec, chunks in reader.records():
            out.append((rec, b"".join(bytes(c) for c in chunks)))
        reader.finish()
    return out


def apply_patch(old, patch_bytes, tmp_path):
    p = tmp_path / "x.patch"
    p.write_bytes(patch_bytes)
    new = tmp_path / "x.new"
    subprocess.run(["bspatch", str(old), str(new), str(p)], check=True)
    return new.read_bytes()


# ------------------------------------------------------------------ realistic pairs

C_V1 = r'''
#include <stdio.h>
static int checksum(const char *s) { int h = 7; while (*s) h = h * 31 + *s++; return h; }
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("%s %d\n", argv[i], checksum(argv[i]));
    return 0;
}
'''
C_V2 = C_V1.replace("h * 31", "h * 131").replace('"%s %d\\n"', '"arg %s -> %d\\n"')


@pytest.fixture(scope="module")
def program_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("prog")
    for name, src in (("v1", C_V1), ("v2", C_V2)):
        (d / (name + ".c")).write_text(src)
        subprocess.run(["gcc", "-O2", "-o", str(d / name), str(d / (name + ".c"))], check=True)
    assert (d / "v1").read_bytes() != (d / "v2").read_bytes()
    return d / "v1", d / "v2"


@pytest.fixture(scope="module")
def squashfs_pair(tmp_path_factory, program_pair):
    d = tmp_path_factory.mktemp("sqfs")
    for name, prog in (("a", program_pair[0]), ("b", program_pair[1])):
        t = d / ("tree-" + name)
        (t / "bin").mkdir(parents=True)
        shutil.copy(prog, t / "bin" / "app")
        (t / "etc").mkdir()
        for i in range(30):
            (t / "etc" / ("conf%02d.ini" % i)).write_text("[section]\nkey=%d\nversion=%s\n" % (i, name) * 20)
        (t / "etc" / "static.bin").write_bytes(bytes(range(256)) * 256)
        subprocess.run(["mksquashfs", str(t), str(d / (name + ".sqfs")), "-noappend", "-all-root", "-quiet",
                        "-mkfs-time", "0", "-all-time", "0"], check=True, stdout=subprocess.DEVNULL)
    return d / "a.sqfs", d / "b.sqfs"


@pytest.mark.parametrize("fmt", ["0.4", "1.6"])
def test_program_and_squashfs_deltas_interoperate_and_install(cli, tmp_path, program_pair, squashfs_pair, fmt):
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "--format", fmt, "--manifest")[0] == 0
    old_prog, new_prog = program_pair
    old_sq, new_sq = squashfs_pair
    code, out, err = cli.otapack("-a", pkg, "-o", old_prog, "-n", new_prog, "-d", "/usr/bin/app", "-m", "0x1ed",
                                 "--file-update-diff")
    assert code == 0 and err == ""
    code, out, err = cli.otapack("-a", pkg, "-o", old_sq, "-n", new_sq, "-d", "/dev/mtdblock3", "-t", "0x400000",
                                 "--file-update-diff")
    assert code == 0 and err == ""
    recs = records_with_data(pkg)
    assert [r.op for r, _ in recs] == [schema.OP_FILE_DIFF, schema.OP_FILE_DIFF, schema.OP_SCRIPT]
    # stock bspatch reproduces both
    assert apply_patch(old_prog, recs[0][1], tmp_path) == new_prog.read_bytes()
    assert apply_patch(old_sq, recs[1][1], tmp_path) == new_sq.read_bytes()
    assert len(recs[1][1]) < new_sq.stat().st_size * 0.95
    # and our installer applies them: a file, and a raw partition (the partition is larger than the image)
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(old_prog, root / "usr/bin/app")
    (root / "dev").mkdir()
    (root / "dev/mtdblock3").write_bytes(old_sq.read_bytes() + b"\xff" * (0x400000 - old_sq.stat().st_size))
    proc = otaunpack("-q", "-r", pkg, "--root", root, "-t", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (root / "usr/bin/app").read_bytes() == new_prog.read_bytes()
    assert os.stat(root / "usr/bin/app").st_mode & 0o7777 == 0o755
    part = (root / "dev/mtdblock3").read_bytes()
    assert part[:new_sq.stat().st_size] == new_sq.read_bytes()
    run = subprocess.run([str(root / "usr/bin/app"), "x"], capture_output=True, text=True)
    assert run.stdout.startswith("arg x -> ")


def test_dir_diff_patches_apply_with_stock_bspatch(cli, tmp_path):
    inp = copy_inputs("v0.4", tmp_path / "in")
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg)[0] == 0
    assert cli.otapack("-a", pkg, "-o", inp / "old", "-n", inp / "new", "-d", "/c", "--dir-update-diff", "-j", "2")[0] == 0
    diffs = [(r, d) for r, d in records_with_data(pkg) if r.op == schema.OP_FILE_DIFF]
    assert [r.dst for r, _ in diffs] == ["/c/changed.bin", "/c/sub/conf.ini"]
    for rec, data in diffs:
        rel = rec.dst[len("/c/"):]
        assert apply_patch(inp / "old" / rel, data, tmp_path) == (inp / "new" / rel).read_bytes()


def test_stock_bsdiff_patch_installs_through_otaunpack(tmp_path, program_pair):
    old, new = program_pair
    patch = tmp_path / "stock.patch"
    subprocess.run(["bsdiff", str(old), str(new), str(patch)], check=True)
    data = patch.read_bytes()
    spec = packer.RecordSpec(schema.OP_FILE_DIFF, "/bin/app", packer.BytesData(data, "app.diff"), src_name="app.diff")
    for fmt in ("0.3", "0.4", "1.6"):
        pkg = tmp_path / ("stock%s.bin" % fmt)
        packer.build(str(pkg), [spec], fmt)
        root = tmp_path / ("root" + fmt)
        (root / "bin").mkdir(parents=True)
        shutil.copy(old, root / "bin/app")
        proc = otaunpack("-q", "-r", pkg, "--root", root, "-t", tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (root / "bin/app").read_bytes() == new.read_bytes()


# ------------------------------------------------------------------ wrong source


@pytest.fixture
def delta_package(cli, tmp_path, program_pair):
    """A 0.4 package with a manifest: a file delta and a raw partition delta, and a begin
    script that leaves a marker."""
    old, new = program_pair
    mark = tmp_path / "mark.sh"
    mark.write_text('touch "$OTA_ROOT/begin-ran"\n')
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "-b", mark, "--manifest")[0] == 0
    assert cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/usr/bin/app", "--file-update-diff")[0] == 0
    assert cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/dev/mtdblock5", "--file-update-diff")[0] == 0
    return pkg


def seeded_app_root(tmp_path, old, app=None, part=None):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "usr/bin/app").write_bytes(app if app is not None else old.read_bytes())
    (root / "dev/mtdblock5").write_bytes(part if part is not None else old.read_bytes() + b"\xff" * 4096)
    return root


@pytest.mark.parametrize("which", ["file", "partition"])
def test_wrong_source_with_manifest_rejects_before_any_write(tmp_path, program_pair, delta_package, which):
    old, new = program_pair
    wrong = bytearray(old.read_bytes())
    wrong[len(wrong) // 2] ^= 0x40
    kw = {"app": bytes(wrong)} if which == "file" else {"part": bytes(wrong) + b"\xff" * 4096}
    root = seeded_app_root(tmp_path, old, **kw)
    before = files_of(root)
    proc = otaunpack("-q", "-r", delta_package, "--root", root, "-t", tmp_path)
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    target = "/usr/bin/app" if which == "file" else "/dev/mtdblock5"
    assert "%s is not the content the delta was made from" % target in last
    assert last.count("sha256") == 1 and len([w for w in last.split() if len(w) == 64]) == 2  # both hashes
    assert files_of(root) == before  # begin script not run, nothing written
    # the right sources install, and the results are checked
    root2 = seeded_app_root(tmp_path / "ok", old)
    proc = otaunpack("-q", "-r", delta_package, "--root", root2, "-t", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (root2 / "usr/bin/app").read_bytes() == new.read_bytes()
    assert (root2 / "dev/mtdblock5").read_bytes()[:new.stat().st_size] == new.read_bytes()


def test_wrong_source_without_manifest_is_a_clear_record_error(cli, tmp_path, program_pair):
    old, new = program_pair
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg)[0] == 0
    assert cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/usr/bin/app", "--file-update-diff")[0] == 0
    root = seeded_app_root(tmp_path, old, app=old.read_bytes()[:1000])  # another, shorter file
    proc = otaunpack("-q", "-r", pkg, "--root", root, "-t", tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "record 1/1 (file-diff /usr/bin/app)" in last and "not the content this delta was made from" in last
    assert (root / "usr/bin/app").read_bytes() == old.read_bytes()[:1000]
    assert os.listdir(root / "usr/bin") == ["app"]
    # nothing stays in -t: no work file, and no journal (nothing was completed or stashed)
    assert [p for p in os.listdir(tmp_path) if p.startswith("sstarota-")] == []


def test_manifest_catches_a_tampered_0_4_record_header(cli, tmp_path, delta_package):
    raw = bytearray(delta_package.read_bytes())
    recs = records_with_data(delta_package)
    off = recs[0][0].offset + 8  # the dst of record 0: "/usr/bin/app" -> "/usr/bin/apq"
    assert raw[off:off + 12] == b"/usr/bin/app"
    raw[off + 11] = ord("q")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    root = tmp_path / "r"
    root.mkdir()
    proc = otaunpack("-q", "-r", bad, "--root", root)
    assert proc.returncode == 3 and "does not match the manifest" in proc.stderr
    assert list(root.iterdir()) == []


def test_manifest_is_a_no_op_for_sh_and_kept_last_by_appends(cli, tmp_path, delta_package, program_pair):
    old, new = program_pair
    recs = records_with_data(delta_package)
    rec, data = recs[-1]
    assert (rec.op, rec.dst) == (schema.OP_SCRIPT, manifest.NAME)
    proc = subprocess.run(["sh"], input=data, capture_output=True)
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    m = manifest.parse(data)
    assert len(m.records) == 2 and sorted(m.diffs) == [0, 1]
    assert m.diffs[0].new_len == new.stat().st_size
    # a later append replaces the manifest, which stays last and lists the new record too
    assert cli.otapack("-a", delta_package, "-s", new, "-d", "/usr/bin/app2", "--file-add")[0] == 0
    recs2 = records_with_data(delta_package)
    assert [r.dst for r, _ in recs2] == ["/usr/bin/app", "/dev/mtdblock5", "/usr/bin/app2", manifest.NAME]
    m2 = manifest.parse(recs2[-1][1])
    assert m2.records[:2] == m.records and len(m2.records) == 3 and m2.diffs == m.diffs
    code, out, err = cli.otapack("--info", delta_package)
    assert code == 0
    root = seeded_app_root(tmp_path, old)
    proc = otaunpack("-q", "-r", delta_package, "--root", root, "-t", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (root / "usr/bin/app2").read_bytes() == new.read_bytes()


def test_threshold_falls_back_to_a_full_update(cli, tmp_path):
    old = tmp_path / "old.bin"
    new = tmp_path / "new.bin"
    old.write_bytes(os.urandom(64 << 10))
    new.write_bytes(os.urandom(64 << 10))  # incompressible and unrelated: the patch cannot pay
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg)[0] == 0
    code, out, err = cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/data/blob", "--file-update-diff")
    assert code == 0
    assert "not smaller than 95% of the new file" in err and "packed as a full file-update instead" in err
    code, out, err = cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/dev/mtdblock6", "--file-update-diff")
    assert "packed as a full block instead" in err
    code, out, err = cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/data/blob2", "--file-update-diff",
                                 "--patch-threshold", "off")
    assert code == 0 and err == ""
    recs = records_with_data(pkg)
    assert [(r.op, r.dst) for r, _ in recs] == [(schema.OP_FILE_UPDATE, "/data/blob"), (schema.OP_BLOCK, "/dev/mtdblock6"),
                                               (schema.OP_FILE_DIFF, "/data/blob2")]
    assert recs[0][1] == new.read_bytes()
    assert len(recs[2][1]) >= 0.95 * len(new.read_bytes())
    assert cli.otapack("-a", pkg, "-o", old, "-n", new, "-d", "/x", "--file-update-diff", "--patch-threshold",
                       "zero")[0] == 2


def test_streaming_bspatch_matches_bsdiff4_on_random_edits():
    import random

    import bsdiff4

    from sstarota import delta

    rnd = random.Random(5)
    for trial in range(20):
        old = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 5000)))
        new = bytearray(old)
        for _ in range(rnd.randrange(0, 20)):
            op = rnd.randrange(3)
            pos = rnd.randrange(0, len(new) + 1)
            if op == 0 and new:
                new[pos % len(new)] ^= rnd.randrange(1, 256)
            elif op == 1:
                new[pos:pos] = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 50)))
            else:
                del new[pos:pos + rnd.randrange(1, 50)]
        new = bytes(new)
        p = bsdiff4.diff(old, new)
        out = io.BytesIO()
        assert delta.patch_stream(io.BytesIO(old), len(old), io.BytesIO(p), out) == len(new)
        assert out.getvalue() == new == bsdiff4.patch(old, p)
