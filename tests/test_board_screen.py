"""The progress screen as the person in front of the camera sees it, at the resolutions a
board has (320x240 up): our words, never the installer's (no options, files or commands),
the reason wrapped inside the screen, one look for every failure (the picture dimmed, the
bar full and red), the download's own progress. Drawn into file-backed framebuffers."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sstarota import fb, progress

from support import bar_state

RESOLUTIONS = [(320, 240, "rgb565"), (480, 272, "bgr565"), (800, 480, "xrgb8888"), (1280, 720, "rgb888")]

#: how each failure reaches the renderer: (the stage it failed in, the installer's message)
FAILURES = {
    "download": ("downloading", "cannot download https://example.com/SStarOta.bin.gz: connection refused (retried 8 "
                                "times; give --retries N)"),
    "damaged": ("verifying", "record 2/9 (ubi /dev/ubi0_0): checksum mismatch: stored 0x01850889, data gives "
                             "0x0185088a"),
    "unsigned": ("verifying", "unsigned package: this board accepts only signed packages"),
    "other-model": ("verifying", "incompatible package: made for cam-b, this board is cam-a (give "
                                 "--force-incompatible to install it anyway)"),
    "downgrade": ("verifying", "downgrade refused: the package is version 1, this board has 6 (give "
                               "--allow-downgrade to install it anyway)"),
    "begin-script": ("begin-script", "the begin script exited with status 1; nothing was written (give "
                                     "--ignore-script-errors to go on as the vendor's otaunpack does)"),
    "write": ("updating", "record 3/5 (block /dev/mtd3): write failed: Input/output error"),
}

#: what the screen must never show: command-line words, options, device and file names
CLI_WORDS = re.compile(r"--|otaunpack|otapack|/dev/|\.bin|\bgive\b|record \d|status \d|0x[0-9a-f]", re.I)


def picture():
    im = Image.new("RGB", (640, 360), (200, 180, 40))
    im.paste((40, 90, 200), (0, 0, 320, 360))
    return im


def screen_for(tmp_path, w, h, layout):
    f = fb.FileFramebuffer(str(tmp_path / ("fb-%dx%d.raw" % (w, h))), fb.Geometry.make(w, h, layout))
    return f, fb.Screen(f, picture())


def check_text(screen, w, h):
    """Every line fits the bar's width, the plate is inside the screen, no CLI words."""
    x, y, lw, lh = screen.label_box
    assert 0 <= x and x + lw <= w and 0 <= y and y + lh <= screen.box.y, (screen.label_box, w, h)
    for line in screen.shown:
        assert screen.letters.width(line) <= screen.box.w - 12 * screen.letters.scale, line
        assert not CLI_WORDS.search(line), line


@pytest.mark.parametrize("w,h,layout", RESOLUTIONS)
def test_every_failure_has_one_look_and_a_short_reason_that_fits(tmp_path, w, h, layout):
    looks = set()
    for kind, (stage, message) in FAILURES.items():
        f, screen = screen_for(tmp_path, w, h, layout)
        r = fb.FramebufferRenderer(screen, clock=lambda: 0.0)
        p = progress.Progress([r])
        p.set_total(1000)
        p.emit("verifying")
        p.add(400)
        p.emit(stage, record=3, records=5, target="/dev/mtd3")
        p.emit(stage, failed=True, message=message)
        p.emit("done", failed=True, final=True, message=message)
        img = fb.screenshot(f)
        check_text(screen, w, h)
        assert screen.shown[0] == fb.FAILED and len(screen.shown) >= 3, (kind, screen.shown)
        looks.add((bar_state(img, screen.box), screen.shown[0]))
        # the picture dimmed (its blue half, far from the text and the bar)
        assert img.getpixel((w // 8, h // 8))[2] < 200 * 0.5, (kind, img.getpixel((w // 8, h // 8)))
        reason = " ".join(screen.shown[1:])
        if stage in ("downloading", "verifying", "begin-script"):
            assert "Nothing was changed." in reason, (kind, reason)
    assert looks == {(("fail", 1.0), fb.FAILED)}


@pytest.mark.parametrize("w,h,layout", RESOLUTIONS)
def test_progress_shows_the_downloads_own_fraction_then_the_install(tmp_path, w, h, layout):
    f, screen = screen_for(tmp_path, w, h, layout)
    ticks = iter(range(1000))  # a clock that never rate-limits
    r = fb.FramebufferRenderer(screen, clock=lambda: next(ticks))
    p = progress.Progress([r])
    p.emit("start")
    p.emit("downloading", message="2.0 MiB of 5.0 MiB at 1.0 MiB/s", part=0.4)
    img = fb.screenshot(f)
    assert screen.shown == ["Downloading the update 40%"]
    assert bar_state(img, screen.box) == ("fill", pytest.approx(0.4, abs=0.02))
    check_text(screen, w, h)
    p.set_total(1000)
    p.emit("updating", record=2, records=5, target="/dev/mtd3", label="kernel")
    p.add(620)
    img = fb.screenshot(f)
    assert screen.shown == ["Installing the update 62%", fb.KEEP_POWER]
    assert bar_state(img, screen.box) == ("fill", pytest.approx(0.62, abs=0.02))
    check_text(screen, w, h)
    p.emit("done", final=True)
    img = fb.screenshot(f)
    assert screen.shown == ["Update complete"] and bar_state(img, screen.box) == ("fill", 1.0)


def test_a_failed_download_through_the_command_line_shows_the_failure_screen(tmp_path):
    raw = tmp_path / "fb.raw"
    pic = tmp_path / "pic.png"
    picture().save(pic)
    proc = subprocess.run([sys.executable, "-m", "sstarota.cli.otaunpack", "-x", "http://127.0.0.1:9/p.bin.gz",
                           "-t", str(tmp_path), "--retries", "0", "--timeout", "2", "-q", "-p", str(pic),
                           "--fb-file", str(raw), "--fb-mode", "320x240-16"], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    f = fb.FileFramebuffer(str(raw), fb.parse_mode("320x240-16"))
    screen = fb.Screen(f)
    assert bar_state(fb.screenshot(f), screen.box) == ("fail", 1.0)
