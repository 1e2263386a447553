"""Signature checks on the armhf board: the board's own Python verifies Ed25519 and P-256
signatures with the ecdsa package from the bundle (docs/SIGNING.md)."""

import re

import pytest

from sstarota import signing

from support import ARM_OTAUNPACK as OTAUNPACK, ARM_TMP as TMP, otapack

pytestmark = [pytest.mark.board_arm, pytest.mark.xdist_group("board_arm")]  # one booted board: one worker


def test_signatures_are_checked_on_the_board_from_the_bundle(arm_board):
    d = arm_board.fresh("sign")
    for name, alg in (("ed", "ed25519"), ("ec", "p256"), ("other", "ed25519")):
        signing.generate(str(d / name), alg)
    (d / "begin.sh").write_text('touch "$OTA_ROOT/begin-ran"\n')
    (d / "f.txt").write_text("signed\n")
    pkgs = {}
    for name, key in (("good", "ed"), ("p256", "ec"), ("unknown", "other"), ("unsigned", None)):
        pkg = d / (name + ".bin")
        otapack("-c", pkg, "-b", d / "begin.sh", "--manifest", "--compatible", "cam-a", "--fw-version", "5")
        otapack("-a", pkg, "-s", d / "f.txt", "-d", "/etc/f.txt", "--file-update")
        if key:
            otapack("-a", pkg, "--sign", d / key)
        pkgs[name] = arm_board.path(pkg)
    root = TMP + "/sign-root"
    arm_board.sh("rm -rf %s && mkdir -p %s/etc/sstarota/keys && cp %s %s/etc/sstarota/keys/ed.pem && "
                 "printf 'compatible = cam-a\\n' > %s/etc/sstarota/board.conf"
                 % (root, root, arm_board.path(d / "ed.pub"), root, root))

    def run(name, *extra):
        return arm_board.run("%s -r %s --root %s -t %s -q %s" % (OTAUNPACK, pkgs[name], root, TMP, " ".join(extra)))

    for name, want in (("unknown", "unknown key"), ("unsigned", "unsigned package")):
        r = run(name)
        assert r.rc == 3 and want in r.err and "Traceback" not in r.err, r.err
        assert arm_board.run("test -e %s/begin-ran || test -e %s/etc/f.txt" % (root, root)).rc == 1
    r = run("good")
    assert r.rc == 0, r.err
    ms = re.search(r"signature checked: ed25519 key [0-9a-f]{16} \((\d+) ms\)", r.err)
    assert ms, r.err
    assert arm_board.sh("cat %s/etc/f.txt %s/etc/sstarota/version" % (root, root)) == "signed\n5\n"
    r = run("p256", "--key", arm_board.path(d / "ec.pub"))
    assert r.rc == 0 and "signature checked: p256" in r.err, r.err
    print("board-arm: Ed25519 signature check on the board: %s ms (import ecdsa, load the key, verify); %s"
          % (ms.group(1), re.search(r"signature checked: p256 .*", r.err).group(0)))
    # ecdsa comes from the bundle: the board's Python has none of its own
    out = arm_board.sh("python3 -c \"import sys; sys.path.insert(0, '%s'); import ecdsa; print(ecdsa.__file__)\""
                       % OTAUNPACK)
    assert out.startswith(OTAUNPACK + "/ecdsa/"), out
