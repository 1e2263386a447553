"""A corrupt, truncated or hostile package is rejected whole: exit 3, no script, nothing written."""

import gzip
import os
import random
import struct
from pathlib import Path

import pytest

from sstarota import checksum, package, schema
from sstarota.cli import otaunpack as otaunpack_cli
from sstarota.writers import base as writers_base

from support import GOLDEN, copy_inputs, files_of

GOLDENS = [("v0.4", n) for n in ("p1", "p2", "p3", "p4")] + [("v1.6", n) for n in ("p1", "p2", "p3", "p4", "p5")]


@pytest.fixture
def scripts_run(monkeypatch):
    """Records every script the installer would run (and runs none)."""
    calls = []

    def fake(self, data, what):
        calls.append(what)
        return 0

    monkeypatch.setattr(writers_base.Context, "run_script", fake)
    return calls


def layout(raw):
    """(header+scripts end, [(record header start, data start, data end)]) of a package."""
    import io

    reader = package.PackageReader(io.BytesIO(raw))
    reader.open()
    gen = reader.header.format
    spans = []
    for rec, chunks in reader.records():
        start = rec.offset
        data = start + gen.record_size
        for _ in chunks:
            pass
        spans.append((start, data, data + rec.data_len))
    return spans[0][0] if spans else len(raw), spans, gen


def covered_positions(raw, rnd):
    """Byte offsets that a checksum covers: all of header+scripts, samples of every record's
    data, and for 1.6 samples of every record header (all 16 MD5 bytes included)."""
    head_end, spans, gen = layout(raw)
    positions = set(range(head_end))
    for start, data, end in spans:
        if end > data:
            positions.update({data, end - 1, (data + end) // 2})
            positions.update(rnd.randrange(data, end) for _ in range(12))
        if gen is schema.GEN16:
            positions.update(range(start, start + 16))
            positions.update(range(start + 16, data, 41))
            positions.update({start + 16, start + 24, start + 536, start + 1048, start + 1560, start + 1572, data - 1})
    return sorted(positions)


def run_install(capfd, pkg, root, *extra):
    code = otaunpack_cli.main(["-r" if not str(pkg).endswith(".gz") else "-x", str(pkg), "--root", str(root), "-q"]
                              + list(extra))
    out, err = capfd.readouterr()
    return code, err


def assert_rejected(capfd, tmp_path, raw, root, before, scripts_run, what, suffix=".bin"):
    pkg = tmp_path / ("bad" + suffix)
    pkg.write_bytes(raw)
    code, err = run_install(capfd, pkg, root)
    assert code == 3, (what, err)
    assert err.count("\n") == 1 and err.startswith("otaunpack: error: "), (what, err)
    assert scripts_run == [], what
    assert files_of(root) == before, what


@pytest.mark.parametrize("version,name", GOLDENS)
def test_flipped_covered_bytes_are_rejected(capfd, tmp_path, scripts_run, version, name):
    raw = (GOLDEN / version / (name + ".bin")).read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    (root / "marker").write_text("board state\n")
    before = files_of(root)
    rnd = random.Random(name + version)
    for pos in covered_positions(raw, rnd):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        assert_rejected(capfd, tmp_path, bytes(bad), root, before, scripts_run, "flip at %d" % pos)


@pytest.mark.parametrize("version,name", GOLDENS)
def test_truncation_and_trailing_bytes_are_rejected(capfd, tmp_path, scripts_run, version, name):
    raw = (GOLDEN / version / (name + ".bin")).read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    before = files_of(root)
    head_end, spans, gen = layout(raw)
    cuts = {head_end - 1, head_end + 1, 1, 0}
    for start, data, end in spans:
        cuts.update({start - 1, start, start + 1, data - 1, data, data + 1, end - 1, end, end + 1})
    cuts.discard(len(raw))
    for cut in sorted(c for c in cuts if c >= 0):
        bad = raw[:cut] if cut < len(raw) else raw + b"\0" * (cut - len(raw))
        assert_rejected(capfd, tmp_path, bad, root, before, scripts_run, "cut at %d" % cut)
    # and as gzip: a truncated compressed stream, and a gzip of a truncated package
    gz = gzip.compress(raw, mtime=0)
    for bad in (gz[:-9], gz[: len(gz) // 2], gzip.compress(raw[:-1], mtime=0), gzip.compress(raw + b"x", mtime=0)):
        assert_rejected(capfd, tmp_path, bad, root, before, scripts_run, "gzip", suffix=".bin.gz")


def _record04(data_len, dst, op=schema.OP_FILE_UPDATE, data_sum=0, mode=0, dst_size=0):
    return schema.Record04.build(dict(data_len=data_len, dst=dst, dst_size=dst_size, mode=mode, data_sum=data_sum,
                                      op=op, pad=bytes(4)))


def _package04(records, total=None, begin=b"", end=b""):
    body = b"".join(h + d for h, d in records)
    if total is None:
        total = sum(len(d) for _, d in records)
    head = schema.GEN04.build_header(len(records), total, len(begin), len(end),
                                     schema.GEN04.script_checksum(begin, end))
    return head + begin + end + body


def test_record_declaring_2_pow_60_bytes_is_rejected_without_allocating(capfd, tmp_path, scripts_run):
    """The header's total can say 2^60 too: the reader still streams, and stops at the end."""
    import resource
    import time

    root = tmp_path / "root"
    root.mkdir()
    for total in (5, 1 << 60):
        raw = _package04([(_record04(1 << 60, "/config/x"), b"hello")], total=total)
        t0 = time.perf_counter()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert_rejected(capfd, tmp_path, raw, root, {}, scripts_run, "2^60")
        assert time.perf_counter() - t0 < 5
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 64 * 1024  # KiB: far below 2^60


@pytest.mark.parametrize("dst,why", [
    ("/../etc/passwd", "'..'"), ("/config/../../x", "'..'"), ("/config/x/.", "'.'"), ("/config/", "empty"),
])
def test_path_escapes_are_refused(capfd, tmp_path, scripts_run, dst, why):
    root = tmp_path / "root"
    root.mkdir()
    data = b"pwned\n"
    raw = _package04([(_record04(len(data), dst, data_sum=checksum.bytesum(data)), data)], begin=b"touch m\n")
    outside = files_of(tmp_path)
    pkg = tmp_path / "bad.bin"
    pkg.write_bytes(raw)
    code, err = run_install(capfd, pkg, root)
    assert code == 3 and "unsafe target" in err and why in err, err
    assert scripts_run == []
    outside[str(Path("bad.bin"))] = raw
    assert files_of(tmp_path) == outside


def test_symlink_leading_out_of_the_root_is_refused(capfd, tmp_path, scripts_run):
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    victim = tmp_path / "outside"
    victim.mkdir()
    os.symlink(str(victim), root / "config" / "link")
    os.symlink("/etc/passwd", root / "config" / "passwd")

    for dst in ("/config/link/x", "/config/passwd"):
        data = b"pwned\n"
        raw = _package04([(_record04(len(data), dst, data_sum=checksum.bytesum(data)), data)])
        pkg = tmp_path / "bad.bin"
        pkg.write_bytes(raw)
        code, err = run_install(capfd, pkg, root)
        assert code == 3 and "leads out of the root" in err, err
        assert list(victim.iterdir()) == []
    # a symlink that stays inside the root is followed
    (root / "data").mkdir()
    os.symlink(str(root / "data"), root / "config" / "inside")
    data = b"ok\n"
    raw = _package04([(_record04(len(data), "/config/inside/f", data_sum=checksum.bytesum(data)), data)])
    pkg.write_bytes(raw)
    assert run_install(capfd, pkg, root)[0] == 0
    assert (root / "data" / "f").read_bytes() == data


def test_nul_in_target_and_unknown_op_are_rejected(capfd, tmp_path, scripts_run):
    root = tmp_path / "root"
    root.mkdir()
    good = bytearray(_package04([(_record04(0, "/config/a", op=schema.OP_FILE_DELETE), b"")]))
    bad = bytearray(good)
    bad[32 + 8 + 4] = 0  # "/con\0ig/a": bytes after the NUL are not all zero
    assert_rejected(capfd, tmp_path, bytes(bad), root, {}, scripts_run, "nul")
    bad = bytearray(good)
    bad[32 + 280] = 9  # op 9
    assert_rejected(capfd, tmp_path, bytes(bad), root, {}, scripts_run, "op")
    bad = bytearray(good)
    bad[32 + 284] = 1  # padding not zero
    assert_rejected(capfd, tmp_path, bytes(bad), root, {}, scripts_run, "pad")
    assert run_install(capfd, tmp_path / "bad.bin", root)[0] == 3


def test_unknown_generation_and_garbage(capfd, tmp_path, scripts_run):
    root = tmp_path / "root"
    root.mkdir()
    for raw in (b"", b"\0" * 10, os.urandom(4000), struct.pack("<IIII", 0, 0, 9, 0) + bytes(28)):
        assert_rejected(capfd, tmp_path, raw, root, {}, scripts_run, "garbage")
    pkg = tmp_path / "bad.bin"
    pkg.write_bytes(struct.pack("<IIII", 0, 0, 9, 0) + bytes(28))
    code, err = run_install(capfd, pkg, root)
    assert "not a SigmaStar OTA package" in err


def test_begin_script_marker_real_shell(cli, tmp_path):
    """End to end with a real sh: a corrupt package never runs its begin script."""
    import subprocess
    import sys

    inp = copy_inputs("v0.4", tmp_path / "in")
    (inp / "mark.sh").write_text('touch "$OTA_ROOT/begin-ran"\n')
    pkg = tmp_path / "p.bin"
    assert cli.otapack("-c", pkg, "-b", inp / "mark.sh")[0] == 0
    assert cli.otapack("-a", pkg, "-s", inp / "files/app.conf", "-d", "/config/app.conf", "--file-update")[0] == 0
    raw = bytearray(pkg.read_bytes())
    raw[-1] ^= 1
    pkg.write_bytes(bytes(raw))
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", str(pkg), "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    assert "checksum mismatch" in proc.stderr.splitlines()[-1]
    assert list(root.iterdir()) == []
    raw[-1] ^= 1
    pkg.write_bytes(bytes(raw))
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-r", str(pkg), "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(root)) == ["begin-ran", "config"]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v0.4", "v1.6"])
def test_every_covered_byte_of_p2_is_checked(capfd, tmp_path, scripts_run, version):
    """Exhaustive: every byte a checksum covers in p2 (all of it in 1.6; all but the record
    header in 0.4, which no checksum covers), flipped one at a time."""
    raw = (GOLDEN / version / "p2.bin").read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    head_end, spans, gen = layout(raw)
    start, data, end = spans[0]
    uncovered = range(start, data) if gen is not schema.GEN16 else range(0)
    for pos in range(len(raw)):
        if pos in uncovered:
            continue
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        assert_rejected(capfd, tmp_path, bytes(bad), root, {}, scripts_run, "flip at %d" % pos)
