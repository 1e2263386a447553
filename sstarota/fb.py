"""The framebuffer progress screen: a picture (jpg/png) with a progress bar over it.

The only module that imports Pillow; the devices (geometry and pixel layout from the
kernel, FileFramebuffer for tests and previews) are fbdev.py's. Pixels are packed for the
layout the framebuffer reports, so RGB565, RGB888, XRGB/ARGB8888 and the BGR orders all
draw right. After the first full draw only the bar's band is repainted, at most 20 times
a second (stage and record changes at once). A failed update leaves a failure screen.
"""

import time
from dataclasses import dataclass, replace

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFont

from .fbdev import (  # noqa: F401  (the device layer, re-exported for callers of fb)
    FB_VISUAL_DIRECTCOLOR,
    FB_VISUAL_TRUECOLOR,
    LAYOUTS,
    Bitfield,
    FileFramebuffer,
    Framebuffer,
    Geometry,
    LayoutError,
    open_framebuffer,
    parse_mode,
)

# Pillow raw modes that pack RGB(A) exactly as a layout wants (little-endian memory order)
_RAWMODES = {
    (24, (16, 8, 0), None): ("RGB", "BGR"),
    (24, (0, 8, 16), None): ("RGB", "RGB"),
    (32, (16, 8, 0), None): ("RGB", "BGRX"),
    (32, (0, 8, 16), None): ("RGB", "RGBX"),
    (32, (24, 16, 8), None): ("RGB", "XBGR"),
    (32, (8, 16, 24), None): ("RGB", "XRGB"),
    (32, (16, 8, 0), 24): ("RGBA", "BGRA"),
    (32, (0, 8, 16), 24): ("RGBA", "RGBA"),
    (32, (24, 16, 8), 0): ("RGBA", "ABGR"),
}


class PixelPacker:
    """RGB images -> framebuffer pixel bytes for one geometry, and back."""

    def __init__(self, g):
        if g.visual not in (FB_VISUAL_TRUECOLOR, FB_VISUAL_DIRECTCOLOR):
            raise LayoutError("visual %d is not true colour" % g.visual)
        if g.bpp not in (16, 24, 32):
            raise LayoutError("%d bits per pixel is not supported (16, 24 or 32)" % g.bpp)
        fields = (g.red, g.green, g.blue)
        if any(f.length < 1 or f.length > 8 or f.offset + f.length > g.bpp for f in fields):
            raise LayoutError("colour bitfields %s do not fit %d bits per pixel" % (fields, g.bpp))
        self.g = g
        self.bytespp = g.bpp // 8
        eights = all(f.length == 8 for f in fields) and g.transp.length in (0, 8)
        key = (g.bpp, tuple(f.offset for f in fields), g.transp.offset if g.transp.length else None)
        self.raw = _RAWMODES.get(key) if eights else None

    def pack(self, img):
        """Bytes for an RGB image, rows contiguous (width x bytes per pixel each)."""
        if self.raw is not None:
            mode, rawmode = self.raw
            if mode == "RGBA":
                img = img.convert("RGBA")
            return img.tobytes("raw", rawmode)
        return self._pack_generic(img)

    def _pack_generic(self, img):
        """Any bitfields: per output byte, OR together each channel's shifted bits (the
        bits never overlap, so a modulo add is an OR), then interleave the byte planes."""
        g = self.g
        bands = img.split()
        planes = [Image.new("L", img.size, 0) for _ in range(self.bytespp)]
        sources = list(zip(bands, (g.red, g.green, g.blue)))
        if g.transp.length:
            sources.append((Image.new("L", img.size, 255), g.transp))
        for band, f in sources:
            for i in range(self.bytespp):
                lo = 8 * i

                def part(v, f=f, lo=lo):
                    word = (v >> (8 - f.length)) << f.offset
                    return (word >> lo) & 0xFF

                if f.offset + f.length <= lo or f.offset >= lo + 8:
                    continue
                planes[i] = ImageChops.add_modulo(planes[i], band.point(part))
        if self.bytespp == 2:
            return Image.merge("LA", planes).tobytes()
        if self.bytespp == 3:
            return Image.merge("RGB", planes).tobytes()
        return Image.merge("RGBA", planes).tobytes()

    def unpack(self, data, width, height):
        """Framebuffer bytes (rows of width pixels) -> an RGB image (tests, screenshots)."""
        if self.raw is not None:
            mode, rawmode = self.raw
            return Image.frombytes(mode, (width, height), bytes(data), "raw", rawmode).convert("RGB")
        g = self.g
        n = self.bytespp
        out = bytearray(width * height * 3)
        fields = (g.red, g.green, g.blue)
        for p in range(width * height):
            word = int.from_bytes(data[p * n:p * n + n], "little")
            for c, f in enumerate(fields):
                v = (word >> f.offset) & ((1 << f.length) - 1)
                out[p * 3 + c] = (v << (8 - f.length)) | (v >> (2 * f.length - 8) if f.length >= 4 else 0)
        return Image.frombytes("RGB", (width, height), bytes(out))


def screenshot(fb):
    """What the framebuffer shows, as an RGB image."""
    g = fb.geometry
    return PixelPacker(g).unpack(fb.read_rect(0, 0, g.xres, g.yres), g.xres, g.yres)


# ---------------------------------------------------------------------------- the screen

BACKGROUND = (0, 0, 0)
BAR_BORDER = (255, 255, 255)
BAR_EMPTY = (48, 48, 48)
BAR_FILL = (0, 200, 80)
BAR_FAIL = (220, 30, 30)
TEXT = (255, 255, 255)
TEXT_PLATE = (24, 24, 28)


@dataclass(frozen=True)
class BarBox:
    """Where the bar sits: the outer box (border included) and the band repainted."""

    x: int
    y: int
    w: int
    h: int
    border: int
    band_y: int
    band_h: int

    @property
    def inner(self):
        """(x, y, w, h) of the fillable inside of the bar."""
        b = self.border
        return self.x + b, self.y + b, self.w - 2 * b, self.h - 2 * b

    @classmethod
    def for_screen(cls, xres, yres, text_h):
        w = max(40, xres * 4 // 5)
        h = max(12, yres // 24)
        x = (xres - w) // 2
        y = yres - yres // 8 - h
        band_y = max(0, y - text_h - 8)
        return cls(x, y, w, h, max(1, h // 8), band_y, y + h - band_y)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def fit(picture, xres, yres):
    """The picture scaled to fit the screen, keeping its aspect, centered on black."""
    screen = Image.new("RGB", (xres, yres), BACKGROUND)
    if picture is None:
        return screen
    scale = min(xres / picture.width, yres / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    scaled = picture.resize(size, Image.BILINEAR)
    screen.paste(scaled, ((xres - size[0]) // 2, (yres - size[1]) // 2))
    return screen


class Screen:
    """Draws the picture and the bar onto a framebuffer."""

    def __init__(self, fb, picture=None, min_interval=0.05):
        self.fb = fb
        g = fb.geometry
        self.g = g
        self.pixels = PixelPacker(g)
        self.font = _font(max(12, g.yres // 30))
        text_h = self.font.getbbox("Ag%")[3] + 2
        self.box = BarBox.for_screen(g.xres, g.yres, text_h)
        self.picture = picture
        self.base = None
        self.min_interval = min_interval
        self._last_draw = 0.0
        self._last_key = None
        self._label_cache = (None, None)

    def full(self, fraction, text, failed=False):
        """Draw everything: background, picture, bar."""
        g = self.g
        base = fit(self.picture, g.xres, g.yres)
        if failed:
            base = ImageEnhance.Brightness(base).enhance(0.35)
        self.base = base
        frame = base.copy()
        self._draw_bar(frame, 0, fraction, text, failed)
        self.fb.write_rect(0, 0, g.xres, g.yres, self.pixels.pack(frame))

    def bar(self, fraction, text, failed=False):
        """Repaint only the bar's band over the picture."""
        if self.base is None:
            return self.full(fraction, text, failed)
        b = self.box
        band = self.base.crop((b.x, b.band_y, b.x + b.w, b.band_y + b.band_h))
        self._draw_bar(band, b.band_y, fraction, text, failed, left=b.x)
        self.fb.write_rect(b.x, b.band_y, b.w, b.band_h, self.pixels.pack(band))

    def _draw_bar(self, img, top, fraction, text, failed, left=0):
        """Draw the bar (and its text line) onto img, whose origin is (left, top) on screen."""
        b = replace(self.box, x=self.box.x - left)
        d = ImageDraw.Draw(img)
        y = b.y - top
        d.rectangle((b.x, y, b.x + b.w - 1, y + b.h - 1), fill=BAR_BORDER)
        ix, iy, iw, ih = b.inner
        iy -= top
        d.rectangle((ix, iy, ix + iw - 1, iy + ih - 1), fill=BAR_EMPTY)
        filled = int(round(max(0.0, min(1.0, fraction)) * iw))
        if filled:
            d.rectangle((ix, iy, ix + filled - 1, iy + ih - 1), fill=BAR_FAIL if failed else BAR_FILL)
        label = self._label(text)
        img.paste(label, (b.x, b.band_y - top + 1))

    def _label(self, text):
        """The text line as an image (white on a dark plate, readable over any picture);
        the last one is kept, as most bar updates repeat it."""
        if self._label_cache[0] != text:
            x0, y0, x1, y1 = self.font.getbbox(text)
            im = Image.new("RGB", (min(x1 + 12, self.box.w), self.box.band_h - self.box.h - 4), TEXT_PLATE)
            ImageDraw.Draw(im).text((6, 1), text, fill=TEXT, font=self.font)
            self._label_cache = (text, im)
        return self._label_cache[1]


class FramebufferRenderer:
    """A progress renderer for the Screen (see progress.Progress)."""

    def __init__(self, screen, clock=time.monotonic):
        self.screen = screen
        self.clock = clock
        self._key = None
        self._last = 0.0
        self._drawn = False

    def __call__(self, e):
        text = "%s  %d%%" % (e.title, int(e.percent))
        if e.record and e.records:
            text += "   %d/%d %s" % (e.record, e.records, e.label or e.target)
        if e.failed and e.final:
            self.screen.full(e.percent / 100, "Update failed: %s" % (e.message or e.title)[:120], failed=True)
            return
        key = (e.stage if e.stage not in ("erasing", "updating") else "apply", e.record, e.failed)
        now = self.clock()
        if not self._drawn:
            self.screen.full(e.percent / 100, text)
            self._drawn = True
        elif key != self._key or e.final or now - self._last >= self.screen.min_interval:
            self.screen.bar(e.percent / 100, text, e.failed)
        else:
            return
        self._key = key
        self._last = now


def load_picture(path):
    """The background picture as RGB (any format Pillow reads: jpg, png, ...)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def open_screen(picture_path, device="/dev/fb0"):
    """A Screen on a framebuffer device; raises OSError, LayoutError or Pillow's errors."""
    picture = load_picture(picture_path) if picture_path else None
    fb = Framebuffer(device)
    try:
        return Screen(fb, picture)
    except LayoutError:
        fb.close()
        raise


__all__ = ["Framebuffer", "FileFramebuffer", "FramebufferRenderer", "Geometry", "LayoutError", "PixelPacker", "Screen",
           "open_framebuffer", "open_screen", "screenshot", "parse_mode"]
