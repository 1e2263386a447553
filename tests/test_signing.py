"""Signed packages (issue 14): manifest v2 over every byte, Ed25519/P-256 signatures, the
board's policy (keys, compatible boards, version), and the vendor's view of a signed package.

Byte flips run the installer in-process (thousands of packages); the refusals with their
own messages run otaunpack as the board does.
"""

import hashlib
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

from sstarota import install, manifest, package, signing
from sstarota.errors import PackageError
from sstarota.install.policy import Policy, version_key
from support import BEGIN, MARKER, OP_SCRIPT, one_line, otaunpack, peak_rss_kib, pkg04, rec04

END = b'echo "end $OTA_STATUS" > "$OTA_ROOT/end-ran"\n'


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, alg in (("ed", "ed25519"), ("ec", "p256"), ("other", "ed25519")):
        signing.generate(str(d / name), alg)
        out[name] = str(d / name)
    return out


def signed_pkg(cli, tmp_path, keys, gen="0.4", key="ed", name="pkg", data=b"hello\n", extra=(), sign=True):
    """A package: begin and end scripts, one file record, signed (or with a plain manifest)."""
    begin, end, src = tmp_path / "begin.sh", tmp_path / "end.sh", tmp_path / (name + ".src")
    begin.write_bytes(BEGIN)
    end.write_bytes(END)
    src.write_bytes(data)
    pkg = tmp_path / name
    cli.pack("-c", pkg, "--format", gen, "-b", begin, "-e", end, "--manifest", *extra)
    cli.pack("-a", pkg, "-s", src, "-d", "/etc/f.txt", "--file-update")
    if sign:
        cli.pack("-a", pkg, "--sign", keys[key])
    return pkg


def install_in_process(data, root, tmp, policy):
    """Install package bytes under root; the PackageError, or None on success."""
    path = os.path.join(tmp, "flip.bin")
    with open(path, "wb") as f:
        f.write(data)
    source = install.open_source(path, gz=False)
    try:
        install.Installer(source, install.Options(root=str(root), tmpdir=tmp, policy=policy)).run()
    except PackageError as exc:
        return exc
    finally:
        source.close()
    return None


def assert_every_flip_refused(data, positions, root, tmp, policy, xor=0x01):
    for i in positions:
        bad = bytearray(data)
        bad[i] ^= xor
        exc = install_in_process(bytes(bad), root, tmp, policy)
        assert exc is not None, "a flip of byte %d was installed" % i
        assert os.listdir(root) == [], "byte %d: the root changed: %s" % (i, os.listdir(root))


@pytest.mark.parametrize("gen", ["0.3", "0.4", "1.6"])
def test_every_single_byte_flip_of_a_small_signed_package_is_refused(cli, tmp_path, keys, gen):
    pkg = signed_pkg(cli, tmp_path, keys, gen)
    data = pkg.read_bytes()
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    policy = Policy(key_paths=[keys["ed"] + ".pub"])
    assert_every_flip_refused(data, range(len(data)), root, str(work), policy)
    # the unflipped package installs: the check is not refusing everything
    assert install_in_process(data, root, str(work), policy) is None
    assert (root / MARKER).exists() and (root / "etc/f.txt").read_bytes() == b"hello\n"


def test_sampled_byte_flips_of_a_larger_signed_package_are_refused(cli, tmp_path, keys):
    pkg = signed_pkg(cli, tmp_path, keys, "1.6", key="ec", data=os.urandom(256 << 10))
    data = pkg.read_bytes()
    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    rng = random.Random(14)
    positions = rng.sample(range(len(data)), 150)
    policy = Policy(key_paths=[keys["ec"] + ".pub"])
    assert_every_flip_refused(data, positions, root, str(work), policy, xor=0xFF)


def _last_record(data, gen="0.4"):
    reader = package.PackageReader(__import__("io").BytesIO(data), "pkg", strict=True)
    reader.open()
    last = None
    for rec, chunks in reader.records():
        for _ in chunks:
            pass
        last = rec
    return last


def _assert_refused_in_root(tmp_path, pkg, want):
    """otaunpack refuses pkg (exit 3, one line naming want) and the root stays empty."""
    root = tmp_path / "root"
    root.mkdir()
    proc = otaunpack("-r", pkg, "--root", root, "-q", text=False)
    assert proc.returncode == 3 and want in one_line(proc)
    assert os.listdir(root) == []


def test_the_manifest_op_flip_is_refused_even_unsigned(cli, tmp_path, keys):
    pkg = signed_pkg(cli, tmp_path, keys, sign=False)
    data = bytearray(pkg.read_bytes())
    at = _last_record(bytes(data)).offset + 8 + 256 + 8 + 4 + 4  # the 0.4 op field
    assert data[at] == 6
    data[at] = 2
    pkg.write_bytes(bytes(data))
    _assert_refused_in_root(tmp_path, pkg, "looks like the sstarota manifest but its header is not")


def test_a_compensating_begin_script_edit_is_refused(cli, tmp_path, keys):
    pkg = signed_pkg(cli, tmp_path, keys, sign=False)
    data = bytearray(pkg.read_bytes())
    at = data.index(b"touch")
    data[at], data[at + 1] = data[at] + 1, data[at + 1] - 1  # the 0.4 byte-sum stays
    pkg.write_bytes(bytes(data))
    assert package.PackageReader(open(pkg, "rb"), "p").open()  # the vendor's checksum passes
    _assert_refused_in_root(tmp_path, pkg, "begin/end scripts do not match the manifest")


def test_an_oversized_manifest_is_refused_not_run(tmp_path):
    body = manifest.MAGIC + b"2\n"
    data = body + b"#" * (manifest.MAX_SIZE + 1 - len(body))
    pkg = tmp_path / "big"
    pkg.write_bytes(pkg04([rec04(manifest.NAME, OP_SCRIPT, data, mode=manifest.MODE, dst_size=len(data))],
                          begin=BEGIN))
    _assert_refused_in_root(tmp_path, pkg, "more than the")


def test_a_last_record_that_starts_like_a_manifest_is_never_a_script(tmp_path):
    data = manifest.MAGIC + b"2\n# end\n"
    pkg = tmp_path / "p"
    pkg.write_bytes(pkg04([rec04("other.sh", OP_SCRIPT, data, dst_size=len(data))], begin=BEGIN))
    _assert_refused_in_root(tmp_path, pkg, "starts like the sstarota manifest")


def test_a_version_1_manifest_is_refused_clearly(tmp_path):
    data = b"# sstarota-manifest 1\n# end\n"
    pkg = tmp_path / "v1"
    pkg.write_bytes(pkg04([rec04(manifest.NAME, OP_SCRIPT, data, mode=manifest.MODE, dst_size=len(data))]))
    _assert_refused_in_root(tmp_path, pkg, "manifest version 1 is not supported")


# ---------------------------------------------------------------------------- the board's policy


def _run(pkg, root, *extra):
    return otaunpack("-r", pkg, "--root", root, "-q", *extra, text=False)


def _refused(proc, root, want):
    assert proc.returncode == 3, proc.stderr
    line = one_line(proc)
    assert want in line, line
    assert not (root / MARKER).exists() and not (root / "etc/f.txt").exists()


@pytest.fixture
def board(tmp_path, keys):
    """A root with a board config, one public key in its keys dir, name cam-a, version 2.0."""
    root = tmp_path / "root"
    (root / "etc/sstarota/keys").mkdir(parents=True)
    (root / "etc/sstarota/keys/ed.pem").write_bytes(open(keys["ed"] + ".pub", "rb").read())
    (root / "etc/sstarota/board.conf").write_text("require_signature = yes\ncompatible = cam-a\n")
    (root / "etc/sstarota/version").write_text("2.0\n")
    return root


def test_signed_packages_install_and_record_their_version(cli, tmp_path, keys, board):
    pkg = signed_pkg(cli, tmp_path, keys, extra=("--compatible", "cam-b cam-a", "--fw-version", "2.1"))
    proc = _run(pkg, board)
    assert proc.returncode == 0, proc.stderr
    assert (board / "etc/f.txt").exists() and b"signature checked: ed25519" in proc.stderr
    assert (board / "etc/sstarota/version").read_text() == "2.1\n"


def test_an_unknown_key_is_refused(cli, tmp_path, keys, board):
    _refused(_run(signed_pkg(cli, tmp_path, keys, key="other"), board), board,
             "unknown key: the package is signed by key")


def test_an_unsigned_package_is_refused_where_signatures_are_required(cli, tmp_path, keys, board):
    _refused(_run(signed_pkg(cli, tmp_path, keys, sign=False), board), board, "unsigned package")
    # no keys but require_signature: refused too; --key on the command line is a key
    empty = tmp_path / "bare"
    empty.mkdir()
    _refused(_run(signed_pkg(cli, tmp_path, keys, name="p2"), empty, "--require-signature"), empty, "no public keys")


def test_a_bad_signature_is_refused(cli, tmp_path, keys, board):
    pkg = signed_pkg(cli, tmp_path, keys)
    data = bytearray(pkg.read_bytes())
    at = data.rindex(b"\n", 0, len(data) - 1) + len("# signature ed25519 ") + 17 + 1
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    pkg.write_bytes(bytes(data))
    proc = _run(pkg, board)
    # the manifest record's checksum catches the edit first; fix it to reach the signature
    assert proc.returncode == 3
    _fix_last_sum(pkg)
    _refused(_run(pkg, board), board, "bad signature")


def _fix_last_sum(pkg):
    data = bytearray(pkg.read_bytes())
    rec = _last_record_unchecked(bytes(data))
    payload = data[rec + 288:]
    struct.pack_into("<I", data, rec + 8 + 256 + 8 + 4, sum(payload) & 0xFFFFFFFF)
    pkg.write_bytes(bytes(data))


def _last_record_unchecked(data):
    count, _, blen, elen = struct.unpack_from("<IQII", data, 12)
    off = 32 + blen + elen
    for _ in range(count - 1):
        off += 288 + struct.unpack_from("<Q", data, off)[0]
    return off


def test_incompatible_and_downgrade_are_refused_unless_overridden(cli, tmp_path, keys, board):
    other = signed_pkg(cli, tmp_path, keys, name="other", extra=("--compatible", "cam-b"))
    _refused(_run(other, board), board, "incompatible package: made for cam-b, this board is cam-a")
    old = signed_pkg(cli, tmp_path, keys, name="old", extra=("--fw-version", "1.9"))
    _refused(_run(old, board), board, "downgrade refused: the package is version 1.9, this board has 2.0")
    assert _run(other, board, "--force-incompatible").returncode == 0
    assert _run(old, board, "--allow-downgrade").returncode == 0
    assert (board / "etc/sstarota/version").read_text() == "1.9\n"


def test_key_rotation_and_p256(cli, tmp_path, keys, board):
    (board / "etc/sstarota/keys/ec.pub").write_bytes(open(keys["ec"] + ".pub", "rb").read())
    assert _run(signed_pkg(cli, tmp_path, keys, key="ec", name="ec"), board).returncode == 0
    assert _run(signed_pkg(cli, tmp_path, keys, key="ed", name="ed"), board).returncode == 0
    # --key on the command line adds a key; --keys-dir replaces the config's directory
    other = signed_pkg(cli, tmp_path, keys, key="other", name="o")
    assert _run(other, board, "--key", keys["other"] + ".pub").returncode == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _refused(_run(other, fresh, "--keys-dir", board / "etc/sstarota/keys"), fresh, "unknown key")


def test_no_keys_no_policy_signed_and_unsigned_install(cli, tmp_path, keys):
    root = tmp_path / "root"
    root.mkdir()
    proc = _run(signed_pkg(cli, tmp_path, keys), root)
    assert proc.returncode == 0 and b"not checked (no keys on this board)" in proc.stderr


def test_version_not_recorded_when_the_end_script_fails(cli, tmp_path, keys, board):
    end = tmp_path / "fail.sh"
    end.write_bytes(b"exit 4\n")
    pkg = tmp_path / "p"
    cli.pack("-c", pkg, "-e", end, "--fw-version", "3")
    cli.pack("-a", pkg, "--sign", keys["ed"])
    proc = _run(pkg, board)
    assert proc.returncode == 0 and b"not recorded" in proc.stderr
    assert (board / "etc/sstarota/version").read_text() == "2.0\n"


def test_version_order():
    order = ["1.0~rc1", "1.0", "1.0a", "1.0.1", "1.2", "1.10", "2"]
    assert sorted(order, key=version_key) == order


# ---------------------------------------------------------------------------- the vendor's view


def test_a_signed_package_installs_with_only_its_vendor_checksums(cli, tmp_path, keys):
    """What the vendor's otaunpack does: check the vendor checksums and pipe each script
    record into sh. The manifest record is such a record, and sh does nothing with it."""
    pkg = signed_pkg(cli, tmp_path, keys)
    reader = package.PackageReader(open(pkg, "rb"), "pkg", strict=True)
    reader.open()
    scripts = []
    for rec, chunks in reader.records():
        data = b"".join(bytes(c) for c in chunks)
        if rec.op == OP_SCRIPT:
            scripts.append(data)
    reader.finish()
    assert len(scripts) == 1 and scripts[0].startswith(manifest.MAGIC)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(["sh", "-e", "-u"], input=scripts[0], capture_output=True, cwd=cwd)
    assert (proc.returncode, proc.stdout, proc.stderr, os.listdir(cwd)) == (0, b"", b"", [])


def test_info_shows_the_signer_and_the_verdict(cli, tmp_path, keys):
    pkg = signed_pkg(cli, tmp_path, keys)
    code, out, _ = cli.otapack("--info", pkg, "--key", keys["ed"] + ".pub")
    assert code == 0 and "good signature" in out and signing.key_id(signing.load_public(keys["ed"])) in out
    code, out, _ = cli.otapack("--info", pkg, "--key", keys["other"] + ".pub")
    assert "unknown key" in out


@pytest.mark.parametrize("case,word", [("good", "good"), ("other-key", "unknown-key"), ("unsigned", "unsigned"),
                                       ("no-manifest", "no-manifest")])
def test_info_with_a_key_fails_unless_signed_by_it(cli, tmp_path, keys, case, word):
    """--info --key: exit 0 only for a package signed by that key; the JSON verdict is a fixed word."""
    import json

    pkg = signed_pkg(cli, tmp_path, keys, sign=case in ("good", "other-key"))
    if case == "no-manifest":
        pkg = tmp_path / "plain.bin"
        cli.pack("-c", pkg)
    key = keys["other" if case == "other-key" else "ed"] + ".pub"
    code, out, err = cli.otapack("--info", pkg, "--key", key, "--json")
    data = json.loads(out)
    assert data["signature"] == word
    if data["manifest"] is not None:
        assert data["manifest"]["verdict"] == word
    assert code == (0 if word == "good" else 2)
    assert "Traceback" not in err and len(err.splitlines()) == (0 if word == "good" else 1)
    code, out, _ = cli.otapack("--info", pkg, "--json")  # without --key: no verdict to fail on
    assert code == 0 and json.loads(out)["signature"] == {"good": "unchecked", "unknown-key": "unchecked"}.get(word,
                                                                                                            word)


@pytest.mark.parametrize("bad", ["missing", "not-pem"])
def test_info_with_an_unreadable_key_is_an_error(cli, tmp_path, keys, bad):
    pkg = signed_pkg(cli, tmp_path, keys)
    key = tmp_path / "key.pub"
    if bad == "not-pem":
        key.write_text("not a key\n")
    code, out, err = cli.otapack("--info", pkg, "--key", key, "--json")
    assert code == 2 and out == ""
    assert "Traceback" not in err and len(err.splitlines()) == 1 and str(key) in err


def test_append_after_signing_says_the_signature_is_dropped(cli, tmp_path, keys):
    import json

    pkg = signed_pkg(cli, tmp_path, keys)
    src = tmp_path / "more.txt"
    src.write_text("more\n")
    code, _, err = cli.otapack("-a", pkg, "-s", src, "-d", "/etc/more.txt", "--file-update")
    assert code == 0
    assert signing.key_id(signing.load_public(keys["ed"])) in err  # no --debug needed
    code, out, _ = cli.otapack("--info", pkg, "--json")
    assert json.loads(out)["signature"] == "unsigned"


# ---------------------------------------------------------------------------- memory


def _signed_deletes(tmp_path, n, key):
    """A 0.4 package of n file-delete records and a signed manifest, byte by byte."""
    from sstarota import schema

    recs = [rec04("/gone/%d" % i, 4) for i in range(n)]
    m = manifest.Manifest()
    m.records = [(hashlib.sha256(r).hexdigest(), hashlib.sha256(b"").hexdigest()) for r in recs]
    m.package = manifest.header_digest(schema.GEN04, pkg04(recs)[:32], b"", b"")
    data = m.to_bytes(signing.sign(signing.load_private(key), hashlib.sha256(m.body()).digest()))
    p = tmp_path / ("signed%d.bin" % n)
    p.write_bytes(pkg04(recs + [rec04(manifest.NAME, OP_SCRIPT, data, mode=manifest.MODE, dst_size=len(data))]))
    return p


def test_memory_is_flat_in_the_number_of_records_of_a_signed_package(tmp_path, keys):

    root = tmp_path / "root"
    root.mkdir()
    pub = keys["ed"] + ".pub"
    small = peak_rss_kib(["-r", _signed_deletes(tmp_path, 1000, keys["ed"]), "--root", root, "-q", "--key", pub])
    large = peak_rss_kib(["-r", _signed_deletes(tmp_path, 60000, keys["ed"]), "--root", root, "-q", "--key", pub])
    assert large - small < 6 * 1024, "60,000 records cost %d KiB more than 1,000" % (large - small)


# ---------------------------------------------------------------------------- config, u-boot, goldens


def test_config_option_unknown_settings_and_require_signature(cli, tmp_path, keys):
    root = tmp_path / "root"
    root.mkdir()
    conf = tmp_path / "board.conf"
    conf.write_text("compatible = cam-z  # this board\n")
    pkg = signed_pkg(cli, tmp_path, keys, extra=("--compatible", "cam-a"))
    _refused(_run(pkg, root, "--config", conf), root, "this board is cam-z")
    conf.write_text("require_signatures = yes\n")
    proc = _run(pkg, root, "--config", conf)
    assert proc.returncode == 2 and "not a setting" in one_line(proc)
    conf.write_text("require_signature = yes\n")
    _refused(_run(signed_pkg(cli, tmp_path, keys, name="u", sign=False), root, "--config", conf), root,
             "no public keys")


def test_the_version_can_live_in_a_u_boot_variable(cli, tmp_path, keys, board):
    """version_env: read with fw_printenv (every variable), written with fw_setenv; under --root
    only the tools its config names inside the root are run (fakes here)."""
    env = tmp_path / "uboot.env"
    env.write_text("4\n")
    bin_ = board / "usr/sbin"
    bin_.mkdir(parents=True)
    (bin_ / "fw_printenv").write_text('#!/bin/sh\necho "sst_ver=$(cat %s)"\n' % env)
    (bin_ / "fw_setenv").write_text('#!/bin/sh\n[ "$1" = sst_ver ] && echo "$2" > %s\n' % env)
    for f in bin_.iterdir():
        f.chmod(0o755)
    (board / "etc/sstarota/board.conf").write_text("version_env = sst_ver\nfw_printenv = /usr/sbin/fw_printenv\n"
                                                   "fw_setenv = /usr/sbin/fw_setenv\n")
    path = dict(os.environ)
    old = signed_pkg(cli, tmp_path, keys, name="old", extra=("--fw-version", "3"))
    proc = otaunpack("-r", old, "--root", board, "-q", env=path, text=False)
    _refused(proc, board, "this board has 4")
    new = signed_pkg(cli, tmp_path, keys, name="new", extra=("--fw-version", "4.1"))
    assert otaunpack("-r", new, "--root", board, "-q", env=path, text=False).returncode == 0
    assert env.read_text() == "4.1\n"


def test_vendor_goldens_are_refused_on_a_board_with_keys(tmp_path, keys):
    """(They install on a board without keys: tests/test_install_golden.py, whose roots have no
    board config.) A board with a key refuses them: they carry no signature."""
    goldens = sorted((Path(__file__).parent / "golden").glob("v*/p*.bin*"))
    assert len(goldens) >= 8
    for pkg in goldens:
        flag = "-x" if pkg.name.endswith(".gz") else "-r"
        root = tmp_path / ("%s-%s" % (pkg.parent.name, pkg.name))
        root.mkdir()
        proc = otaunpack(flag, pkg, "--root", root, "-q", "--key", keys["ed"] + ".pub", text=False)
        assert proc.returncode == 3 and "unsigned package" in one_line(proc)
        assert os.listdir(root) == []


def test_otapack_will_not_name_a_record_like_the_manifest(cli, tmp_path):
    src = tmp_path / "x.sh"
    src.write_text("true\n")
    pkg = tmp_path / "p"
    cli.pack("-c", pkg)
    code, _, err = cli.otapack("-a", pkg, "-s", src, "-d", manifest.NAME, "--script-add")
    assert code == 2 and "is the sstarota manifest's" in err


@pytest.mark.parametrize("name", ["ed", "ec"])
def test_the_one_shot_verification_agrees_with_python_ecdsa(keys, name):
    """signing.verify skips python-ecdsa's generator table; its verdict must stay the library's
    own (VerifyingKey.verify) for good signatures, flipped bits and wrong keys alike."""
    import ecdsa

    sk = signing.load_private(keys[name])
    vk, other = sk.get_verifying_key(), signing.load_public(keys["other" if name == "ec" else "ec"] + ".pub")
    rng = random.Random(14)
    body = hashlib.sha256(b"body").digest()
    good = signing.sign(sk, body)
    msg = manifest.signed_message(body)

    def library(sig):
        try:
            if good.alg == "ed25519":
                return vk.verify(sig, msg)
            return vk.verify(sig, msg, hashfunc=hashlib.sha256)
        except ecdsa.BadSignatureError:
            return False

    assert signing.verify(vk, good, body) and library(good.sig)
    assert not signing.verify(other, good, body)
    assert not signing.verify(vk, good, hashlib.sha256(b"other body").digest())
    for _ in range(40):
        sig = bytearray(good.sig)
        sig[rng.randrange(len(sig))] ^= 1 << rng.randrange(8)
        flipped = manifest.Signature(good.alg, good.key_id, bytes(sig))
        assert signing.verify(vk, flipped, body) is library(bytes(sig)) is False
