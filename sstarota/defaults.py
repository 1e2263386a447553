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
