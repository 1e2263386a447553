"""The progress screen on a real kernel framebuffer (vfb) at 16 and 32 bits per pixel."""

import json
import os
import sys
from pathlib import Path

import pytest

from sstarota import fb, packer

pytestmark = [pytest.mark.board, pytest.mark.xdist_group("board")]  # one booted board: one worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.screen import QUADRANTS, bar_fraction, close, quadrant_picture  # noqa: E402

GEOMETRY = ("python3 -c \"import json; from sstarota import fb; g = fb.Framebuffer('/dev/fb0').geometry; "
            "print(json.dumps([g.xres, g.yres, g.bpp, g.line_length, [[f.offset, f.length] for f in "
            "(g.red, g.green, g.blue, g.transp)]]))\"")


@pytest.mark.parametrize("bpp", [16, 32])
def test_progress_screen_on_vfb(board, bpp):
    d = board.fresh("fb%d" % bpp)
    board.sh("rmmod vfb 2>/dev/null; modprobe vfb vfb_enable=1 videomemorysize=4194304 mode_option=640x480-%d" % bpp)
    xres, yres, got_bpp, line_length, fields = json.loads(board.sh(GEOMETRY))
    assert (xres, yres, got_bpp) == (640, 480, bpp)
    geometry = fb.Geometry(xres, yres, bpp, line_length, *(fb.Bitfield(*f) for f in fields))
    pic = quadrant_picture(d / "upgrade.jpg", size=(640, 480))
    # a package whose middle record photographs the screen
    (d / "a.img").write_bytes(os.urandom(512 << 10))
    (d / "b.img").write_bytes(os.urandom(512 << 10))
    (d / "snap.sh").write_text("cat /dev/fb0 > %s/mid.raw\n" % board.path(d))
    pkg = d / "p.bin"
    packer.create(str(pkg))
    packer.append(str(pkg), packer.operation_specs("block-update", src=str(d / "a.img"), dst="/dev/mtd1"))
    packer.append(str(pkg), packer.operation_specs("script-add", src=str(d / "snap.sh"), dst="snap.sh"))
    packer.append(str(pkg), packer.operation_specs("block-update", src=str(d / "b.img"), dst="/dev/mtd3"))
    r = board.run("python3 -m sstarota.cli.otaunpack -q -r %s -p %s --progress-fd 3 3>%s/events.jsonl"
                  % (board.path(pkg), board.path(pic), board.path(d)))
    assert r.rc == 0, r.err
    assert "warning" not in r.err
    board.sh("cat /dev/fb0 > %s/final.raw" % board.path(d))
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    at_snap = next(e for e in events if e["stage"] == "updating" and e["record"] == 2)
    screen = fb.Screen(fb.FileFramebuffer(str(d / "mid.raw"), geometry))
    mid = fb.screenshot(screen.fb)
    assert abs(bar_fraction(mid, screen.box) - at_snap["percent"] / 100) <= 0.02, at_snap["percent"]
    assert 0.2 < at_snap["percent"] / 100 < 0.95
    final = fb.screenshot(fb.FileFramebuffer(str(d / "final.raw"), geometry))
    assert bar_fraction(final, screen.box) == 1.0
    tol = 24  # jpeg, and 5/6-bit channels at 16 bpp
    for i, colour in enumerate(QUADRANTS):
        x, y = 160 + (i % 2) * 320, 120 + (i // 2) * 200
        assert close(final.getpixel((x, y)), colour, tol), (i, final.getpixel((x, y)))
    final.save(str(d / "final.png"))
