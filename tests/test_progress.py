"""Progress: the event stream, the text bar, and the framebuffer screen on file-backed
framebuffers of every supported pixel layout."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sstarota import fb, progress

from support import GOLDEN, QUADRANTS, bar_fraction, close, copy_inputs, otaunpack, otaunpack_events, quadrant_picture

PROJECT = Path(__file__).parent.parent
@pytest.fixture
def pkg(cli, tmp_path):
    inp = copy_inputs("v0.4", tmp_path / "in")
    (inp / "end.sh").write_text('echo "$OTA_STATUS" > "$OTA_ROOT/end-status"\n')
    p = tmp_path / "p.bin"
    assert cli.otapack("-c", p, "-b", inp / "begin.sh", "-e", inp / "end.sh")[0] == 0
    for argv in (("-s", inp / "images/kernel", "-d", "/dev/mtdblock4", "--block-update"),
                 ("-s", inp / "images/customer.ubifs", "-d", "/dev/ubi0_1", "--ubi-update"),
                 ("-o", inp / "old", "-n", inp / "new", "-d", "/c", "--dir-update-diff")):
        assert cli.otapack("-a", p, *argv)[0] == 0
    return p


def run_with_events(pkg, root, tmp_path, *extra):
    return otaunpack_events(tmp_path / "events.jsonl", "-r", pkg, "--root", root, "-t", tmp_path, "-q", *extra)


def test_event_stream_is_monotonic_ordered_and_ends_at_100_after_the_end_script(pkg, tmp_path):
    root = tmp_path / "root"
    shutil_copy_old(root)
    proc, events = run_with_events(pkg, root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    pcts = [e["percent"] for e in events]
    assert pcts == sorted(pcts)
    assert pcts[-1] == 100.0 and all(p < 100 for p in pcts[:-1])
    assert events[-1]["stage"] == "done" and events[-1]["final"] and not events[-1]["failed"]
    assert (events[-1]["code"], events[-1]["reason"]) == (0, "ok") and events[-1]["summary"]["written"] == events[-1]["summary"]["records"]
    assert all(e["code"] is None and e["reason"] == "" for e in events[:-1])
    ranks = [progress.STAGE_RANK[e["stage"]] for e in events]
    assert ranks == sorted(ranks)
    stages = []
    for e in events:
        if not stages or stages[-1] != e["stage"]:
            stages.append(e["stage"])
    assert stages[:3] == ["start", "verifying", "begin-script"]
    assert stages[-2:] == ["end-script", "done"]
    assert "erasing" not in stages or stages.index("erasing") > 2
    # record context travels with the events: every record's target appears during updating
    updating = {e["target"] for e in events if e["stage"] == "updating"}
    assert {"/dev/mtdblock4", "/dev/ubi0_1", "/c/changed.bin"} <= updating
    # the end script ran before the final event: the percentage was still below 100 then
    end = [e for e in events if e["stage"] == "end-script"]
    assert end and end[-1]["percent"] < 100
    # the apply phase moves the bar: most of the range is covered by verify + apply bytes
    assert any(40 < p < 99 for p in pcts)


def shutil_copy_old(root):
    import shutil

    shutil.copytree(GOLDEN / "v0.4/in/old", root / "c")


def test_failing_install_ends_with_a_failed_stage(pkg, tmp_path):
    root = tmp_path / "root"
    shutil_copy_old(root)
    (root / "c" / "changed.bin").write_bytes(b"another old file")  # the delta record fails
    proc, events = run_with_events(pkg, root, tmp_path)
    assert proc.returncode == 1
    last = events[-1]
    assert last["final"] and last["failed"] and last["stage"] == "done"
    assert (last["code"], last["reason"]) == (1, "failed")
    assert "not the content this delta was made from" in last["message"]
    failed = [e for e in events if e["failed"]]
    assert failed[0]["stage"] == "updating" and failed[0]["target"] == "/c/changed.bin"
    pcts = [e["percent"] for e in events]
    assert pcts == sorted(pcts) and pcts[-1] < 100
    assert (root / "end-status").read_text() == "-1\n"


def test_rejected_package_events(pkg, tmp_path):
    raw = bytearray(pkg.read_bytes())
    raw[-1] ^= 1
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    root = tmp_path / "root"
    root.mkdir()
    proc, events = run_with_events(bad, root, tmp_path)
    assert proc.returncode == 3
    assert [e["stage"] for e in events if e["failed"]] == ["verifying", "done"]
    assert (events[-1]["code"], events[-1]["reason"]) == (3, "rejected")
    shutil_copy_old(tmp_path / "old-root")
    proc, events = run_with_events(pkg, tmp_path / "old-root", tmp_path, "--dry-run")
    assert proc.returncode == 0 and (events[-1]["code"], events[-1]["reason"]) == (0, "dry-run")


def test_the_final_event_names_a_failed_begin_script(cli, tmp_path):
    """Supervisors read the final event's exit code and reason word, not its message."""
    (tmp_path / "fail.sh").write_text("exit 7\n")
    (tmp_path / "f").write_text("x\n")
    p = tmp_path / "p.bin"
    assert cli.otapack("-c", p, "-b", tmp_path / "fail.sh")[0] == 0
    assert cli.otapack("-a", p, "-s", tmp_path / "f", "-d", "/f", "--file-update")[0] == 0
    root = tmp_path / "root"
    root.mkdir()
    proc, events = run_with_events(p, root, tmp_path)
    assert proc.returncode == 1 and (events[-1]["code"], events[-1]["reason"]) == (1, "begin-script")
    assert not (root / "f").exists()


def test_text_bar_on_a_tty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = progress.Progress([progress.TextRenderer(out)])
    p.set_total(100)
    p.emit("verifying", records=2, record=1, target="/dev/mtd3")
    p.add(50)
    p.emit("done", final=True)
    text = out.getvalue()
    assert "\r\x1b[K[" in text and "verifying 1/2 /dev/mtd3" in text
    assert text.endswith("100.0% done 1/2 /dev/mtd3\n")



def test_byte_events_go_only_to_renderers_that_read_them():
    seen = {"bytes": [], "stages": []}

    def everything(e):
        seen["bytes"].append(e)

    class StagesOnly:
        byte_events = False

        def __call__(self, e):
            seen["stages"].append(e)

    plain = io.StringIO()
    p = progress.Progress([StagesOnly(), progress.TextRenderer(plain)])
    p.set_total(1000)
    p.emit("verifying", records=1, record=1, target="/dev/mtd3")
    for _ in range(9):
        p.add(100)
    assert [e.stage for e in seen["stages"]] == ["verifying"]
    p.emit("updating")
    assert seen["stages"][-1].done == 900 and seen["stages"][-1].percent == 90.0
    assert plain.getvalue().count("\n") == 2  # plain lines: one per stage and record
    p.renderers.append(everything)
    p.add(50)
    assert [(e.stage, e.done) for e in seen["bytes"]] == [("updating", 950)]
    assert [e.done for e in seen["stages"]] == [0, 900, 950]
    assert plain.getvalue().count("\n") == 2


def test_oom_guard_tries_once_where_it_may_not_lower_the_score(tmp_path, monkeypatch):
    from sstarota.cli import process

    opened = []
    real_open = open

    def counting_open(path, *a, **k):
        opened.append(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(process, "open", counting_open, raising=False)
    guard = process.OomGuard()
    guard.PATH = str(tmp_path / "no-such-dir" / "oom_score_adj")
    for _ in range(50):
        guard(progress.Event("updating"))
    assert len(opened) == 1 and guard.saved is None
    score = tmp_path / "oom_score_adj"  # where it may: shielded while writing, then restored
    score.write_text("200\n")
    guard = process.OomGuard()
    guard.PATH = str(score)
    guard(progress.Event("erasing"))
    assert score.read_text() == "-1000"
    guard(progress.Event("updating"))
    guard(progress.Event("end-script"))
    assert score.read_text() == "200"
    assert guard.byte_events is False
@pytest.mark.parametrize("layout", sorted(fb.LAYOUTS))
def test_screen_on_every_pixel_layout(tmp_path, layout):
    pic = fb.load_picture(quadrant_picture(tmp_path / "pic.png"))
    g = fb.Geometry.make(320, 180, layout)
    f = fb.FileFramebuffer(str(tmp_path / "fb.raw"), g)
    screen = fb.Screen(f, pic)
    screen.full(0.37, "Updating 37%")
    img = fb.screenshot(f)
    tol = 8 if g.bpp == 16 else 0
    # the picture fills the 16:9 screen: the quadrant colours at their centres
    for i, colour in enumerate(QUADRANTS):
        x, y = 80 + (i % 2) * 160, 45 + (i // 2) * 90 - (20 if i >= 2 else 0)
        assert close(img.getpixel((x, y)), colour, tol), (layout, i, img.getpixel((x, y)))
    assert abs(bar_fraction(img, screen.box) - 0.37) <= 0.02
    # a later update repaints only the bar's band
    outside = (0, 0, 10, 10)
    f.write_rect(*outside, b"\x5a" * (10 * 10 * g.bpp // 8))
    screen.bar(0.81, "Updating 81%")
    assert f.read_rect(*outside) == b"\x5a" * (10 * 10 * g.bpp // 8)
    img = fb.screenshot(f)
    assert abs(bar_fraction(img, screen.box) - 0.81) <= 0.02


def test_pixel_bytes_for_pure_colours(tmp_path):
    """Independent of the packer's own decoder: the bytes a pure red pixel takes."""
    expect = {"rgb565": b"\x00\xf8", "bgr565": b"\x1f\x00", "rgb888": b"\x00\x00\xff", "bgr888": b"\xff\x00\x00",
              "xrgb8888": b"\x00\x00\xff", "argb8888": b"\x00\x00\xff\xff", "xbgr8888": b"\xff\x00\x00",
              "abgr8888": b"\xff\x00\x00\xff", "rgbx8888": b"\x00\x00\x00\xff"}
    red = Image.new("RGB", (1, 1), (255, 0, 0))
    for layout, want in expect.items():
        data = fb.PixelPacker(fb.Geometry.make(1, 1, layout)).pack(red)
        assert data[:len(want)] == want, layout
    green = Image.new("RGB", (1, 1), (0, 255, 0))
    assert fb.PixelPacker(fb.Geometry.make(1, 1, "rgb565")).pack(green) == b"\xe0\x07"


def test_renderer_rate_limit_and_failure_screen(tmp_path):
    g = fb.Geometry.make(200, 120, "xrgb8888")
    f = fb.FileFramebuffer(str(tmp_path / "fb.raw"), g)
    screen = fb.Screen(f, fb.load_picture(quadrant_picture(tmp_path / "p.png")))
    now = [0.0]
    r = fb.FramebufferRenderer(screen, clock=lambda: now[0])
    p = progress.Progress([r])
    p.set_total(1000)
    p.emit("updating", record=1, records=2, target="/dev/mtd1")
    p.add(300)
    drawn = fb.screenshot(f)
    assert abs(bar_fraction(drawn, screen.box) - 0.0) <= 0.02  # within 50 ms of the last draw: skipped
    now[0] = 0.06
    p.add(100)
    assert abs(bar_fraction(fb.screenshot(f), screen.box) - 0.40) <= 0.02
    p.add(100)  # same instant again: not drawn
    assert abs(bar_fraction(fb.screenshot(f), screen.box) - 0.40) <= 0.02
    p.emit("updating", record=2, records=2, target="/dev/mtd2")  # a new record: drawn at once
    assert abs(bar_fraction(fb.screenshot(f), screen.box) - 0.50) <= 0.02
    p.emit("done", failed=True, final=True, message="write failed")
    img = fb.screenshot(f)
    ix, iy, iw, ih = screen.box.inner
    assert close(img.getpixel((ix + 2, iy + ih // 2)), fb.BAR_FAIL, 2)
    assert img.getpixel((10, 10))[0] < QUADRANTS[0][0] * 0.5  # the picture dimmed


@pytest.mark.parametrize("what", ["no-device", "broken-picture", "unknown-layout"])
def test_screen_problems_fall_back_to_text(pkg, tmp_path, what):
    root = tmp_path / "root"
    shutil_copy_old(root)
    pic = quadrant_picture(tmp_path / "pic.jpg")
    args = {"no-device": ["-p", pic, "--fb", tmp_path / "nofb"],
            "broken-picture": ["-p", tmp_path / "broken.png", "--fb-file", tmp_path / "fb.raw"],
            "unknown-layout": ["-p", pic, "--fb-file", tmp_path / "fb.raw", "--fb-mode", "640x480-8"]}[what]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "warning: no framebuffer progress" in proc.stderr
    assert "otaunpack: 100% done" in proc.stderr
    assert (root / "end-status").read_text() == "0\n"


def test_jpg_screen_through_the_cli(pkg, tmp_path):
    root = tmp_path / "root"
    shutil_copy_old(root)
    pic = quadrant_picture(tmp_path / "pic.jpg")
    proc = otaunpack("-r", pkg, "--root", root, "-t", tmp_path, "-q", "-p", pic, "--fb-file", tmp_path / "fb.raw",
                     "--fb-mode", "640x360-16")
    assert proc.returncode == 0, proc.stderr
    f = fb.FileFramebuffer(str(tmp_path / "fb.raw"), fb.parse_mode("640x360-16"))
    img = fb.screenshot(f)
    assert close(img.getpixel((160, 90)), QUADRANTS[0], 24)  # jpeg + RGB565
    assert close(img.getpixel((480, 90)), QUADRANTS[1], 24)
    screen = fb.Screen(f)
    assert bar_fraction(img, screen.box) == 1.0


def test_screenshot_command_saves_a_png(pkg, tmp_path):
    root = tmp_path / "root"
    shutil_copy_old(root)
    raw = tmp_path / "fb.raw"
    assert otaunpack("-r", pkg, "--root", root, "-t", tmp_path, "-q", "-p", quadrant_picture(tmp_path / "p.png"),
                     "--fb-file", raw, "--fb-mode", "320x180-bgr565").returncode == 0
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.fbshot", raw, out, "--mode", "320x180-bgr565"],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as im:
        assert im.size == (320, 180)
        assert close(im.convert("RGB").getpixel((80, 45)), QUADRANTS[0], 8)
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.fbshot", tmp_path / "none.raw", out, "--mode", "1x1-9"],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
