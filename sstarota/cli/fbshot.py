"""python -m sstarota.cli.fbshot SOURCE OUT.png: save what a framebuffer shows as PNG."""

import sys

import click

from ..defaults import FB_MODE
from ..errors import InputError
from .common import CONTEXT_SETTINGS, run

PROG = "python -m sstarota.cli.fbshot"

HELP = """Save what a framebuffer shows as a PNG (or any format Pillow writes, by OUT's suffix).

SOURCE is a device (/dev/fb0: geometry from the kernel) or a file drawn with
otaunpack --fb-file (give its --mode)."""


@click.command(help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("source")
@click.argument("out")
@click.option("--mode", default=FB_MODE, show_default=True, metavar="WxH-LAYOUT",
              help="Geometry of a file SOURCE: 16, 24, 32 or a layout name (rgb565, bgr565, argb8888, ...).")
def cli(source, out, mode):
    from .. import fb

    try:
        fb.screenshot(fb.open_framebuffer(source, mode)).save(out)
    except (OSError, fb.LayoutError, ValueError) as exc:
        raise InputError(str(exc)) from None
    return 0


def main(argv=None):
    return run(cli, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
