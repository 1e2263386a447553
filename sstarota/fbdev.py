"""Framebuffer devices, without drawing: geometry and pixel layout from the kernel
(FBIOGET_VSCREENINFO / FBIOGET_FSCREENINFO), rectangles written and read with pwrite and
pread, and FileFramebuffer, a framebuffer backed by a plain file (tests, previews).
Drawing (Pillow) is fb.py's."""

import fcntl
import os
import stat
import struct

from .defaults import FB_DEVICE, FB_MODE
from .recordclass import dataclass

FBIOGET_VSCREENINFO = 0x4600
FBIOGET_FSCREENINFO = 0x4602
FB_VISUAL_TRUECOLOR = 2
FB_VISUAL_DIRECTCOLOR = 4

# struct fb_var_screeninfo: 8 u32, then 4 x struct fb_bitfield {offset, length, msb_right}, ...
_VAR = struct.Struct("=8I12I")
# struct fb_fix_screeninfo: char id[16]; unsigned long smem_start; u32 smem_len, type, type_aux,
# visual; u16 xpanstep, ypanstep, ywrapstep; u32 line_length; ... (native alignment: 32/64-bit)
_FIX = struct.Struct("@16sLIIIIHHHI")


class LayoutError(Exception):
    """The framebuffer's pixel format is not one this screen can draw."""


@dataclass(frozen=True)
class Bitfield:
    offset: int
    length: int


@dataclass(frozen=True)
class Geometry:
    xres: int
    yres: int
    bpp: int
    line_length: int
    red: Bitfield
    green: Bitfield
    blue: Bitfield
    transp: Bitfield = Bitfield(0, 0)
    xoffset: int = 0
    yoffset: int = 0
    visual: int = FB_VISUAL_TRUECOLOR

    @classmethod
    def make(cls, xres, yres, layout):
        """A geometry by layout name: rgb565, bgr565, rgb888, bgr888, xrgb8888, argb8888,
        xbgr8888, rgbx8888 (names give the channels from the most significant bits)."""
        bpp, fields = LAYOUTS[layout]
        red, green, blue, transp = (Bitfield(*f) for f in fields)
        return cls(xres, yres, bpp, xres * bpp // 8, red, green, blue, transp)


#: layout name -> (bits per pixel, ((offset, length) of red, green, blue, alpha))
LAYOUTS = {
    "rgb565": (16, ((11, 5), (5, 6), (0, 5), (0, 0))),
    "bgr565": (16, ((0, 5), (5, 6), (11, 5), (0, 0))),
    "rgb888": (24, ((16, 8), (8, 8), (0, 8), (0, 0))),
    "bgr888": (24, ((0, 8), (8, 8), (16, 8), (0, 0))),
    "xrgb8888": (32, ((16, 8), (8, 8), (0, 8), (0, 0))),
    "argb8888": (32, ((16, 8), (8, 8), (0, 8), (24, 8))),
    "xbgr8888": (32, ((0, 8), (8, 8), (16, 8), (0, 0))),
    "abgr8888": (32, ((0, 8), (8, 8), (16, 8), (24, 8))),
    "rgbx8888": (32, ((24, 8), (16, 8), (8, 8), (0, 0))),
}

class Framebuffer:
    """A /dev/fbN device: geometry from the kernel, pixels written with pwrite."""

    def __init__(self, path=FB_DEVICE):
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        try:
            var = bytearray(160)
            fcntl.ioctl(self.fd, FBIOGET_VSCREENINFO, var, True)
            fix = bytearray(80)
            fcntl.ioctl(self.fd, FBIOGET_FSCREENINFO, fix, True)
        except OSError:
            os.close(self.fd)
            raise
        v = _VAR.unpack_from(var)
        xres, yres, _, _, xoffset, yoffset, bpp, _gray = v[:8]
        bf = [Bitfield(v[8 + 3 * i], v[9 + 3 * i]) for i in range(4)]
        f = _FIX.unpack_from(fix)
        visual, line_length = f[5], f[9]
        self.geometry = Geometry(xres, yres, bpp, line_length, bf[0], bf[1], bf[2], bf[3], xoffset, yoffset, visual)

    def write_rect(self, x, y, w, h, data):
        g = self.geometry
        bpp = g.bpp // 8
        row = w * bpp
        base = (g.yoffset + y) * g.line_length + (g.xoffset + x) * bpp
        for r in range(h):
            os.pwrite(self.fd, data[r * row:(r + 1) * row], base + r * g.line_length)

    def read_rect(self, x, y, w, h):
        g = self.geometry
        bpp = g.bpp // 8
        base = (g.yoffset + y) * g.line_length + (g.xoffset + x) * bpp
        return b"".join(os.pread(self.fd, w * bpp, base + r * g.line_length) for r in range(h))

    def close(self):
        os.close(self.fd)


class FileFramebuffer(Framebuffer):
    """A framebuffer backed by a plain file with a given geometry (tests, docs)."""

    def __init__(self, path, geometry):
        self.path = path
        self.geometry = geometry
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = geometry.line_length * (geometry.yres + geometry.yoffset)
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)


def open_framebuffer(source, mode=FB_MODE):
    """A device node (geometry from the kernel) or a file drawn with --fb-file (geometry
    from mode, as parse_mode reads it)."""
    if stat.S_ISCHR(os.stat(source).st_mode):
        return Framebuffer(source)
    return FileFramebuffer(source, parse_mode(mode))


def parse_mode(text):
    """'1280x720-32' or '640x480-rgb565' -> a Geometry (FileFramebuffer)."""
    size, _, kind = text.partition("-")
    w, _, h = size.partition("x")
    kind = {"16": "rgb565", "24": "rgb888", "32": "xrgb8888"}.get(kind, kind or "xrgb8888")
    if kind not in LAYOUTS:
        raise LayoutError("unknown layout %r (known: %s)" % (kind, ", ".join(sorted(LAYOUTS))))
    return Geometry.make(int(w), int(h), kind)
