"""The framebuffer screen on armhf with Debian's armhf Pillow, into a file-backed screen
(the armhf kernel has no vfb): the progress bar over a picture, read back on the host."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import fb

pytestmark = [pytest.mark.board_arm, pytest.mark.xdist_group("board_arm")]  # one booted board: one worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.screen import QUADRANTS, bar_fraction, close, quadrant_picture  # noqa: E402

BIN = Path(sys.executable).parent


def test_progress_screen_with_debians_armhf_pillow(arm_board):
    d = arm_board.fresh("fb")
    pic = quadrant_picture(d / "upgrade.jpg", size=(320, 240))
    (d / "a.img").write_bytes(os.urandom(256 << 10))
    pkg = d / "p.bin"
    for args in (["-c", pkg], ["-a", pkg, "-s", d / "a.img", "-d", arm_board.emmc, "--block-update"]):
        subprocess.run([str(BIN / "otapack")] + [str(a) for a in args], check=True, capture_output=True)
    r, peak_kb = arm_board.measured("-q", "-r", arm_board.path(pkg), "-t", "/data/tmp", "-p", arm_board.path(pic),
                                    "--fb-file", arm_board.path(d / "screen.raw"), "--fb-mode", "320x240-16")
    assert r.rc == 0, r.err
    assert "warning" not in r.err, r.err  # Pillow loaded: no fall-back to text
    geometry = fb.parse_mode("320x240-16")
    screen = fb.Screen(fb.FileFramebuffer(str(d / "check.raw"), geometry))
    final = fb.screenshot(fb.FileFramebuffer(str(d / "screen.raw"), geometry))
    assert bar_fraction(final, screen.box) == 1.0
    for i, colour in enumerate(QUADRANTS):
        x, y = 80 + (i % 2) * 160, 60 + (i // 2) * 100
        assert close(final.getpixel((x, y)), colour, 24), (i, final.getpixel((x, y)))
    print("armhf install with the Pillow screen: peak RSS %d kB" % peak_kb)
