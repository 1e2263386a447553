"""Defaults shared by the library and the command lines, each declared once here. Imports
nothing: otaunpack's `--help` reads them without loading the installer."""

#: the framebuffer device of the progress screen (otaunpack --fb, fbshot)
FB_DEVICE = "/dev/fb0"
#: the geometry of a framebuffer drawn into a file (otaunpack --fb-mode, fbshot --mode)
FB_MODE = "1280x720-32"
#: URL sources: seconds to wait for any answer, attempts in a row that get no byte, seconds
#: for one read of the package (otaunpack --timeout, --retries, --time-limit)
URL_TIMEOUT = 30.0
URL_RETRIES = 8
URL_TIME_LIMIT = 3600.0

#: the package generations otapack -c makes (--format), and the one it makes by default; schema.GENERATIONS
#: holds their layouts (a test checks the two agree)
GENERATION_NAMES = ("0.3", "0.4", "1.6")
DEFAULT_GENERATION = "0.4"
