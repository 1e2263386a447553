"""otaunpack: the board-side installer. Verifies the whole package before writing anything."""

import sys

import click

from ..errors import UsageError
from .common import CONTEXT_SETTINGS, run

HELP = """Install a SigmaStar OTA package (legacy, 0.3, 0.4, 1.6; raw or gzip).

\b
  otaunpack -x SStarOta.bin.gz [-t DIR] [-p upgrade.jpg]
  otaunpack -r SStarOta.bin    [-t DIR]
  otaunpack -r - -t DIR < SStarOta.bin     (stdin; spooled under DIR)

Every checksum, length and target is verified first; only then the begin script runs and
records are written, in order. The end script runs after success (OTA_STATUS=0) and after a
failed update (OTA_STATUS=-1). A package that fails verification is rejected whole: no
script runs, nothing is written.

\b
Exit codes:
  0  success
  1  the update failed after writing began (or the begin script failed)
  2  usage
  3  the package was rejected and nothing was written
"""


@click.command(help=HELP, context_settings=CONTEXT_SETTINGS)
@click.option("-x", "gz_path", metavar="PKG.gz", help="A gzip-compressed package ('-' for stdin).")
@click.option("-r", "raw_path", metavar="PKG", help="A raw package ('-' for stdin).")
@click.option("-t", "tmpdir", metavar="DIR", help="Work directory (patches, stdin spool). Default: $TMPDIR or /tmp.")
@click.option("-p", "picture", metavar="PIC", help="Show progress on the framebuffer over this picture (jpg/png).")
@click.option("--fb", "fb_device", default="/dev/fb0", show_default=True, metavar="DEV", help="Framebuffer device for -p.")
@click.option("--fb-file", metavar="FILE", help="Draw the screen into FILE instead of a device (previews, tests).")
@click.option("--fb-mode", default="1280x720-32", show_default=True, metavar="WxH-LAYOUT",
              help="Geometry of --fb-file: 16, 24, 32 or a layout name (rgb565, bgr565, argb8888, ...).")
@click.option("--progress-fd", type=int, metavar="N", help="Write progress events as JSON lines to file descriptor N.")
@click.option("--root", metavar="DIR", help="Take every target under DIR (staging, tests); nothing outside is touched.")
@click.option("--no-scripts", is_flag=True, help="Do not run the begin/end scripts or script records.")
@click.option("--dry-run", is_flag=True, help="Verify only, then print the plan (exit 0 or 3).")
@click.option("--all-targets", is_flag=True, help="1.6: write every target of a record, mask 0 ones too.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--debug", is_flag=True, help="Tracebacks for errors.")
def cli(gz_path, raw_path, tmpdir, picture, fb_device, fb_file, fb_mode, progress_fd, root, no_scripts, dry_run,
        all_targets, quiet, debug):
    from .. import install, progress

    if bool(gz_path) == bool(raw_path):
        raise UsageError("give one package: -x PKG.gz or -r PKG")
    if root is not None:
        import os

        if not os.path.isdir(root):
            raise UsageError("--root %s is not a directory" % root)
    if tmpdir is not None:
        import os

        if not os.path.isdir(tmpdir):
            raise UsageError("-t %s is not a directory" % tmpdir)

    def note(msg):
        click.echo("otaunpack: note: %s" % msg, err=True)

    def warn(msg):
        click.echo("otaunpack: warning: %s" % msg, err=True)

    renderers = [] if quiet else [progress.TextRenderer()]
    if progress_fd is not None:
        try:
            renderers.append(progress.JsonRenderer(progress_fd))
        except OSError as exc:
            raise UsageError("--progress-fd %d: %s" % (progress_fd, exc.strerror)) from None
    if picture or fb_file:
        screen = _screen(picture, fb_device, fb_file, fb_mode, warn)
        if screen is not None:
            from ..fb import FramebufferRenderer

            renderers.append(FramebufferRenderer(screen))
    source = install.open_source(gz_path or raw_path, gz=True if gz_path else None, tmpdir=tmpdir)
    try:
        opts = install.Options(root=root, tmpdir=tmpdir, run_scripts=not no_scripts, all_targets=all_targets,
                               dry_run=dry_run)
        plan = install.Installer(source, opts, progress.Progress(renderers, warn), note).run()
    finally:
        source.close()
    if dry_run:
        click.echo("\n".join(plan.lines()))
    return 0


def _screen(picture, device, fb_file, mode, warn):
    """The framebuffer screen, or None with a warning: the screen never fails an update."""
    try:
        from .. import fb

        pic = fb.load_picture(picture) if picture else None
        if fb_file:
            return fb.Screen(fb.FileFramebuffer(fb_file, fb.parse_mode(mode)), pic)
        return fb.Screen(fb.Framebuffer(device), pic)
    except Exception as exc:  # no framebuffer, a broken picture, an unknown pixel layout, no Pillow
        warn("no framebuffer progress (%s: %s); text progress only" % (picture or fb_file or device, exc))
        return None


def main(argv=None):
    return run(cli, argv, "otaunpack")


if __name__ == "__main__":
    sys.exit(main())
