"""The bundle's minimal Python runtime (sstarota.runtime) as the armhf board's whole /usr:
Debian's interpreter, its libraries and a zip of exactly the modules the installer imports.
A second boot of the board, with that image instead of Debian's full Python."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import boardvm_arm  # noqa: E402

from sstarota import bundle, runtime  # noqa: E402

pytestmark = pytest.mark.board_arm

BIN = Path(sys.executable).parent


def otapack(*args):
    subprocess.run([str(BIN / "otapack")] + [str(a) for a in args], check=True, capture_output=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_an_install_on_the_minimal_runtime(tmp_path):
    rig = boardvm_arm.setup(log=lambda msg: sys.stderr.write(msg + "\n"))
    work = tmp_path / "work"
    (work / "bundle").mkdir(parents=True)
    pyz = work / "bundle" / "otaunpack"
    bundle.zipapp(str(pyz))
    runtime.build("armhf", str(tmp_path), str(rig / "runtime"), str(pyz), log=lambda msg: None)
    image = os.urandom((2 << 20) + 99)
    old = os.urandom(300000)
    new = old[:5000] + b"patched" + old[5000:] + os.urandom(1000)
    for name, data in (("image", image), ("app.old", old), ("app.new", new)):
        (work / name).write_bytes(data)
    pkg = work / "p.bin"
    otapack("-c", pkg, "--manifest")
    otapack("-a", pkg, "-s", work / "image", "-d", "/dev/emmc", "--block-update")
    otapack("-a", pkg, "-s", work / "app.new", "-d", "/data/new.bin", "--file-add")
    otapack("-a", pkg, "-o", work / "app.old", "-n", work / "app.new", "-d", "/data/app", "--file-update-diff")
    otapack("--gzip", pkg)
    with boardvm_arm.ArmBoardVM(rig, work, usr_image=tmp_path / "python-armhf.sqfs") as vm:
        # nothing but the runtime: no stdlib directory, the modules come from the zip
        out = vm.run("ls /usr/lib/python3.11; python3 -c 'import json; print(json.__file__)'"
                     ).check().out
        assert out.split() == ["lib-dynload", "/usr/lib/python311.zip/json/__init__.pyc"]
        vm.run("mkdir -p /data/tmp && cp /mnt/work/app.old /data/app").check()
        r = vm.run("python3 /mnt/work/bundle/otaunpack --help")
        assert r.rc == 0 and "Exit codes" in r.out, r.err
        r = vm.run("python3 /mnt/work/bundle/otaunpack -x /mnt/work/p.bin.gz -t /data/tmp --progress-fd 1")
        assert r.rc == 0, r.err
        assert '"stage": "done"' in r.out
        got = vm.run("head -c %d /dev/emmc | sha256sum; sha256sum /data/app /data/new.bin" % len(image)).check()
        assert got.out.split()[::2] == [sha(image), sha(new), sha(new)]
