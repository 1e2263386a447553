"""The board runtime as a product, on the armhf board with nothing else: no Debian Python,
/lib a directory of its own (not merged /usr, as Buildroot and the vendors' busybox roots
have it). The runtime (scripts/board-bundle --runtime armhf: Debian's interpreter, glibc,
OpenSSL, Pillow for the screen, a zip of exactly the modules the installer imports) is put
there as an integrator would: the tarball's part outside /usr (the loader at
/lib/ld-linux-armhf.so.3) at /, its usr/ as the squashfs at /usr. A virtio-gpu display is
the board's /dev/fb0; qemu's user network reaches this machine's web server (http, https
with a test CA). Every path of the probe runs there, then the installs a person sees: an
https download, a signed package on a keyed board, deltas, a failed and a rejected
install, each on the framebuffer, whose screens are dumped and checked."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import boardvm  # noqa: E402
import boardvm_arm  # noqa: E402

from sstarota import bundle, fb, progress, runtime, signing  # noqa: E402

from support import bar_state, events_of, otapack

pytestmark = [pytest.mark.board_arm, pytest.mark.xdist_group("board_arm-runtime")]  # its own board: one worker

BIN = Path(sys.executable).parent
W = "/mnt/work"
OTAUNPACK = W + "/bundle/otaunpack"  # #!/usr/bin/python3: the runtime's
SCREEN = (800, 480)
TMP = "/data/tmp"

#: what the screen must never show: command-line words, options, device and file names
CLI_WORDS = re.compile(r"--|otaunpack|otapack|/dev/|\.bin|\bgive\b|record \d|status \d|0x[0-9a-f]", re.I)


class RuntimeBoard(boardvm.Workspace):
    def __init__(self, vm, work, urls):
        super().__init__(vm, work)
        self.urls = urls
        self.emmc = vm.run("readlink /dev/emmc").check().out.strip()
        out = vm.run("python3 -c \"import sys, json; sys.path.insert(0, '%s'); from sstarota.fbdev import "
                     "Framebuffer; g = Framebuffer('/dev/fb0').geometry; print(json.dumps([g.xres, g.yres, g.bpp, "
                     "g.line_length, [[f.offset, f.length] for f in (g.red, g.green, g.blue, g.transp)], "
                     "g.xoffset, g.yoffset, g.visual]))\"" % OTAUNPACK).check().out
        x, y, bpp, line, fields, xo, yo, visual = json.loads(out)
        self.geometry = fb.Geometry(x, y, bpp, line, *(fb.Bitfield(*f) for f in fields), xo, yo, visual)

    def otaunpack(self, *args, events=None):
        """otaunpack with the screen on /dev/fb0 (-p), its events as JSON lines into `events`."""
        extra = " --progress-fd 3 3>%s" % self.path(events) if events else ""
        return self.vm.run("%s %s%s" % (OTAUNPACK, " ".join(str(a) for a in args), extra))

    def screenshot(self, name):
        """What /dev/fb0 shows: dumped on the board, read here (an RGB image)."""
        raw = self.work / "shots" / (name + ".raw")
        raw.parent.mkdir(exist_ok=True)
        g = self.geometry
        self.vm.run("dd if=/dev/fb0 of=%s bs=%d count=%d 2>/dev/null" % (self.path(raw), g.line_length, g.yres)
                    ).check()
        img = fb.screenshot(fb.FileFramebuffer(str(raw), g))
        img.save(self.work / "shots" / (name + ".png"))
        return img


@pytest.fixture(scope="module")
def rt_board(tmp_path_factory):
    rig = boardvm_arm.setup_runtime(log=lambda msg: sys.stderr.write(msg + "\n"))
    work = tmp_path_factory.mktemp("board-arm-rt")
    (work / "bundle").mkdir()
    bundle.zipapp(str(work / "bundle/otaunpack"), interpreter="/usr/bin/python3")
    cache = os.path.join(os.path.expanduser("~"), ".cache", "sstarota-runtime")
    tree = runtime.build("armhf", str(work / "runtime"), cache, log=lambda msg: sys.stderr.write(msg + "\n"))
    shutil.rmtree(tree)  # the board gets the tarball and the squashfs
    probe = runtime.make_probe(str(work / "probe"))
    served = runtime.Served(probe)
    vm = boardvm_arm.ArmBoardVM(rig, work, usr_image=work / "runtime/python-armhf.sqfs", net=True, screen=SCREEN)
    vm.start()
    try:
        vm.run("mkdir -p %s" % TMP).check()
        yield RuntimeBoard(vm, work, served.urls(boardvm_arm.HOST))
    finally:
        vm.stop()
        served.stop()


def plate(img, box):
    """(top, bottom, white pixels) of the text plate above the bar, from the screen's pixels."""
    rows = [y for y in range(0, box.y) if sum(1 for x in range(box.x, box.x + 40)
                                                 if img.getpixel((x, y)) == fb.TEXT_PLATE) >= 20]
    assert rows, "no text on the screen"
    top, bottom = min(rows), max(rows)
    white = sum(1 for y in range(top, bottom + 1) for x in range(box.x, box.x + box.w)
                if img.getpixel((x, y)) == fb.TEXT)
    return top, bottom, white


def check_screen(board, img, events, want_bar, want_first):
    """The dumped screen: the bar's colour and fill, the text plate inside the screen above
    the bar with text on it; the lines the events give (replayed here) free of CLI words."""
    g = board.geometry
    replay = fb.Screen(fb.FileFramebuffer(str(board.work / "shots" / "replay.raw"), g))
    ticks = iter(range(100000))
    r = fb.FramebufferRenderer(replay, clock=lambda: next(ticks))
    for e in events:
        r(progress.Event(**e))
    assert replay.shown[0] == want_first, replay.shown
    for line in replay.shown:
        assert not CLI_WORDS.search(line), line
    assert bar_state(img, replay.box) == want_bar
    top, bottom, white = plate(img, replay.box)
    assert 0 <= top and bottom < replay.box.y and white > 50, (top, bottom, white)
    return replay.shown


def test_the_board_runs_from_the_runtime_alone_on_a_root_without_merged_usr(rt_board):
    out = rt_board.sh("[ -L /lib ] && echo merged || echo separate; ls /lib; ls /usr/lib/python3.11; "
                      "ls /usr/bin; python3 --version")
    assert out.split() == ["separate", "ld-linux-armhf.so.3", "lib-dynload", "python3", "python3.11",
                           "Python", "3.11.2"], out
    r = rt_board.vm.run("%s --version" % OTAUNPACK)
    assert r.rc == 0 and r.out.startswith("otaunpack (sstarota) ") and "Python 3.11.2" in r.out, r
    assert (rt_board.geometry.xres, rt_board.geometry.yres) == SCREEN


def test_every_path_of_the_probe_on_the_runtime_alone(rt_board):
    """The probe's cases (runtime.CASES) on the board: every exit code as expected, no
    module missing, the screen drawn with the runtime's own Pillow."""
    script = runtime.case_script(OTAUNPACK, rt_board.urls)
    (rt_board.work / "probe" / "cases.sh").write_text(script)
    rt_board.vm.run("cd %s/probe && sh cases.sh" % W, timeout=3000).check()
    out = rt_board.work / "probe" / "out"
    codes = dict(line.split() for line in (out / "codes").read_text().splitlines())
    assert {k: int(v) for k, v in codes.items()} == runtime.EXPECTED
    for name, _, _, screen in runtime.case_runs(rt_board.urls):
        err = (out / (name + ".err")).read_text()
        assert "Traceback" not in err and "No module named" not in err, (name, err)
        if screen:
            assert "no framebuffer progress" not in err, (name, err)


def test_https_install_with_a_test_ca_on_the_screen(rt_board):
    d = rt_board.work / "probe"
    shutil.rmtree(d / "root/screen-https", ignore_errors=True)
    shutil.copytree(d / "template", d / "root/screen-https")
    ev = rt_board.fresh("ev-https") / "events.jsonl"
    r = rt_board.otaunpack("-x", rt_board.urls["https"] + "/p.bin.gz", "--ca", W + "/probe/ca.crt",
                           "--root", W + "/probe/root/screen-https", "-t", TMP, "-q", "-p", W + "/probe/pic.jpg",
                           events=ev)
    assert r.rc == 0, r.err
    events = events_of(ev)
    parts = [e["part"] for e in events if e["stage"] == "downloading"]
    assert parts and parts[-1] == 1.0 and parts == sorted(parts), parts
    img = rt_board.screenshot("https-done")
    check_screen(rt_board, img, events, ("fill", 1.0), "Update complete")


def test_signed_package_on_a_keyed_board_a_delta_and_failures_on_the_screen(rt_board):
    d = rt_board.fresh("sig")
    for name in ("ed", "other"):
        signing.generate(str(d / name), "ed25519")
    old = os.urandom(300000)
    new = old[:5000] + b"patched" + old[5000:] + os.urandom(1000)
    kold = os.urandom(1 << 20)
    knew = kold[:1000] + b"kernel delta" + kold[1000:] + os.urandom(3000)
    for name, data in (("app.old", old), ("app.new", new), ("k.old", kold), ("k.new", knew)):
        (d / name).write_bytes(data)
    (d / "f.txt").write_text("signed\n")
    (d / "fail.sh").write_text("exit 1\n")
    pkg = d / "signed.bin"
    otapack("-c", pkg, "--manifest", "--compatible", "cam-a", "--fw-version", "5")
    otapack("-a", pkg, "-s", d / "f.txt", "-d", "/data/app/f.txt", "--file-update")
    otapack("-a", pkg, "-o", d / "app.old", "-n", d / "app.new", "-d", "/data/app/bin", "--file-update-diff")
    otapack("-a", pkg, "-o", d / "k.old", "-n", d / "k.new", "-d", rt_board.emmc, "--file-update-diff")
    otapack("-a", pkg, "--sign", d / "ed")
    otapack("--gzip", pkg)
    for name, key in (("unknown", "other"), ("failing", "ed")):
        p = d / (name + ".bin")
        otapack("-c", p, "--manifest", "--compatible", "cam-a", "--fw-version", "6",
                *(["-b", d / "fail.sh"] if name == "failing" else []))
        otapack("-a", p, "-s", d / "f.txt", "-d", "/data/app/g.txt", "--file-update")
        otapack("-a", p, "--sign", d / key)
    # the keyed board: its key and name in /etc/sstarota, the old app and the old partition
    rt_board.sh("mkdir -p /etc/sstarota/keys /data/app && cp %s /etc/sstarota/keys/ed.pem && "
                "echo 'compatible = cam-a' > /etc/sstarota/board.conf && cp %s /data/app/bin && "
                "dd if=%s of=%s bs=64k 2>/dev/null && sync"
                % (rt_board.path(d / "ed.pub"), rt_board.path(d / "app.old"), rt_board.path(d / "k.old"),
                   rt_board.emmc))
    pic = W + "/probe/pic.png"
    ev = d / "signed.jsonl"
    r = rt_board.otaunpack("-x", rt_board.path(d / "signed.bin.gz"), "-t", TMP, "-q", "-p", pic, events=ev)
    assert r.rc == 0, r.err
    got = rt_board.sh("sha256sum /data/app/bin; head -c %d %s | sha256sum; cat /etc/sstarota/version"
                      % (len(knew), rt_board.emmc)).split()
    import hashlib

    assert got[0] == hashlib.sha256(new).hexdigest() and got[2] == hashlib.sha256(knew).hexdigest()
    assert got[4] == "5"
    check_screen(rt_board, rt_board.screenshot("signed-delta-done"), events_of(ev), ("fill", 1.0), "Update complete")
    looks = set()
    for name, code in (("unknown", 3), ("failing", 1)):
        ev = d / (name + ".jsonl")
        r = rt_board.otaunpack("-r", rt_board.path(d / (name + ".bin")), "-t", TMP, "-q", "-p", pic, events=ev)
        assert r.rc == code and "Traceback" not in r.err, r.err
        img = rt_board.screenshot(name)
        shown = check_screen(rt_board, img, events_of(ev), ("fail", 1.0), fb.FAILED)
        looks.add((bar_state(img, fb.Screen(fb.FileFramebuffer(str(d / "x.raw"), rt_board.geometry)).box),
                   shown[0], shown[-1]))
    assert looks == {(("fail", 1.0), fb.FAILED, fb.UNCHANGED)}
    assert rt_board.run("test -e /data/app/g.txt").rc == 1
