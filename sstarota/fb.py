"""The framebuffer progress screen: a picture (jpg/png) with a progress bar over it.

The only module that imports Pillow; the devices (geometry and pixel layout from the
kernel, FileFramebuffer for tests and previews) are fbdev.py's. Pixels are packed for the
layout the framebuffer reports, so RGB565, RGB888, XRGB/ARGB8888 and the BGR orders all
draw right. After the first full draw only the bar's band is repainted, at most 20 times
a second (stage and record changes at once). A failed update leaves a failure screen.
"""

import time

from PIL import Image, ImageChops, ImageDraw, ImageFont

from .defaults import FB_DEVICE, FB_MODE
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
from .recordclass import dataclass, replace

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

#: lines of text the screen holds above the bar (a title and a wrapped reason)
MAX_LINES = 5

#: what the person in front of the camera reads per stage: our words, never the
#: installer's messages (those name files, options and commands)
STAGE_WORDS = {"start": "Checking the update", "verifying": "Checking the update",
               "downloading": "Downloading the update", "begin-script": "Installing the update",
               "erasing": "Installing the update", "updating": "Installing the update",
               "end-script": "Installing the update"}
KEEP_POWER = "Do not turn the power off."
UNCHANGED = "Nothing was changed."
FAILED = "Update failed"


def failure_reason(stage, message):
    """(reason, advice) for a failed update, in plain words, from the stage it failed in and
    the first words of the installer's message (the error classes' fixed reason words)."""
    m = message.split("): ", 1)[-1] if message.startswith("record ") else message
    if stage in ("start", "downloading"):
        return "The update could not be downloaded.", UNCHANGED
    if stage == "verifying":
        if m.startswith(("unsigned package", "unknown key", "bad signature", "signatures are required")):
            return "This update is not approved for this camera.", UNCHANGED
        if m.startswith("incompatible package"):
            return "This update is for another model.", UNCHANGED
        if m.startswith("downgrade refused"):
            return "This update is older than the one installed.", UNCHANGED
        return "The update file is damaged or incomplete.", UNCHANGED
    if stage == "begin-script":
        return "The camera was not ready for the update.", UNCHANGED
    return "The update stopped before it was complete.", "Keep the power on and try the update again."


@dataclass(frozen=True)
class BarBox:
    """Where the bar sits: the outer box (border included) and the band repainted (the text
    lines above the bar and the bar)."""

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
    except TypeError:  # Pillow < 10.1: the fixed bitmap font (scaled up when drawn)
        return ImageFont.load_default()


class Lettering:
    """Text lines at a height in pixels, with Pillow's own font at any version: a scalable
    font where Pillow has one, else its bitmap font drawn at an integer scale."""

    def __init__(self, height):
        self.font = _font(height)
        native = self.font.getbbox("Ag")[3]
        self.scale = max(1, int(round(height / max(1, native)))) if native < height * 0.8 else 1
        self.line_h = (native + 3) * self.scale

    def width(self, text):
        return int(self.font.getlength(text) * self.scale)

    def wrap(self, text, width):
        """Words into lines no wider than width (a word longer than a line is cut)."""
        lines, cur = [], ""
        for word in text.split():
            cand = (cur + " " + word).strip()
            if self.width(cand) <= width:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            while self.width(word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and self.width(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        if cur:
            lines.append(cur)
        return lines

    def render(self, lines, width):
        """The lines, white on a dark plate, as an image `width` wide at most."""
        w = min(width, max(self.width(t) for t in lines) + 12 * self.scale)
        s = self.scale
        im = Image.new("RGB", ((w + s - 1) // s, len(lines) * self.line_h // s + 2), TEXT_PLATE)
        d = ImageDraw.Draw(im)
        for i, t in enumerate(lines):
            d.text((6, 1 + i * self.line_h // s), t, fill=TEXT, font=self.font)
        if s > 1:
            im = im.resize((im.width * s, im.height * s), Image.NEAREST)
        return im


#: a failure dims the picture to 35% (as ImageEnhance.Brightness(0.35), without its second image)
DIM = [int(v * 0.35) for v in range(256)]
#: rows of the screen packed and written at a time by Screen.full
STRIP_ROWS = 64


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
    """Draws the picture, up to MAX_LINES lines of text and the bar onto a framebuffer."""

    def __init__(self, fb, picture=None, min_interval=0.05):
        self.fb = fb
        g = fb.geometry
        self.g = g
        self.pixels = PixelPacker(g)
        self.letters = Lettering(max(12, g.yres // 30))
        self.box = BarBox.for_screen(g.xres, g.yres, self.letters.line_h * MAX_LINES + 4)
        self.picture = picture  # until the first full(): then fitted to the screen and dropped
        self.base = None
        self.dimmed = False
        self.min_interval = min_interval
        self._label_cache = (None, None)
        self.shown = []  # the text lines on the screen now (tests, screenshots)
        self.label_box = None  # (x, y, w, h) of their plate on the screen

    def lines(self, text):
        """Text (one string, or several: paragraphs) wrapped to the bar's width, at most MAX_LINES."""
        paras = [text] if isinstance(text, str) else list(text)
        out = []
        for para in paras:
            out += self.letters.wrap(para, self.box.w - 12 * self.letters.scale)
        return out[:MAX_LINES]

    def full(self, fraction, text, failed=False):
        """Draw everything: background (dimmed for a failure), picture, text, bar. One
        screen-sized image is kept (the picture fitted, then dimmed in its place); the frame
        goes out in strips, so the packed pixels never take a whole screen either."""
        g = self.g
        if self.base is None:
            self.base, self.picture = fit(self.picture, g.xres, g.yres), None
        if failed and not self.dimmed:
            self.base, self.dimmed = self.base.point(DIM * 3), True
        for y in range(0, g.yres, STRIP_ROWS):
            h = min(STRIP_ROWS, g.yres - y)
            self.fb.write_rect(0, y, g.xres, h, self.pixels.pack(self.base.crop((0, y, g.xres, y + h))))
        self._band(fraction, text, failed)

    def bar(self, fraction, text, failed=False):
        """Repaint only the bar's band (its text and the bar) over the picture."""
        if self.base is None:
            return self.full(fraction, text, failed)
        self._band(fraction, text, failed)

    def _band(self, fraction, text, failed):
        b = self.box
        band = self.base.crop((b.x, b.band_y, b.x + b.w, b.band_y + b.band_h))
        self._draw_bar(band, b.band_y, fraction, text, failed, left=b.x)
        self.fb.write_rect(b.x, b.band_y, b.w, b.band_h, self.pixels.pack(band))

    def _draw_bar(self, img, top, fraction, text, failed, left=0):
        """Draw the bar and its text lines onto img, whose origin is (left, top) on screen."""
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
        img.paste(label, (b.x, y - 4 - label.height))
        self.label_box = (self.box.x, self.box.y - 4 - label.height, label.width, label.height)

    def _label(self, text):
        """The text lines as an image; the last one is kept, as most bar updates repeat it."""
        key = text if isinstance(text, str) else tuple(text)
        if self._label_cache[0] != key:
            self.shown = self.lines(text)
            self._label_cache = (key, self.letters.render(self.shown, self.box.w))
        return self._label_cache[1]


class FramebufferRenderer:
    """A progress renderer for the Screen (see progress.Progress): our words for each stage,
    the download's own fraction while downloading, and one failure screen for every failure
    (the picture dimmed, the bar full and red, what happened and what to do in plain words)."""

    def __init__(self, screen, clock=time.monotonic):
        self.screen = screen
        self.clock = clock
        self._key = None
        self._last = 0.0
        self._drawn = False
        self.failure = None  # (reason, advice) once the update failed

    @staticmethod
    def words(e):
        """(fraction of the bar, text lines) for an event that is not a failure."""
        if e.stage == "done":
            dry = e.message.startswith("dry run")
            return 1.0, ["Update checked" if dry else "Update complete"]
        title = STAGE_WORDS.get(e.stage, "Updating")
        part = getattr(e, "part", -1.0)
        if e.stage == "downloading" and part is not None and part >= 0:
            return part, ["%s %d%%" % (title, int(part * 100))]
        if e.stage == "downloading":
            return 0.0, [title]
        lines = ["%s %d%%" % (title, int(e.percent))]
        if title == STAGE_WORDS["updating"]:
            lines.append(KEEP_POWER)
        return e.percent / 100, lines

    def __call__(self, e):
        if self.failure is not None:
            return  # the failure screen stays
        if e.failed:
            self.failure = failure_reason(e.stage, e.message)
            self.screen.full(1.0, [FAILED] + list(self.failure), failed=True)
            return
        fraction, lines = self.words(e)
        key = (e.stage if e.stage not in ("erasing", "updating") else "apply", e.record, len(lines))
        now = self.clock()
        if not self._drawn:
            self.screen.full(fraction, lines)
            self._drawn = True
        elif key != self._key or e.final or now - self._last >= self.screen.min_interval:
            self.screen.bar(fraction, lines)
        else:
            return
        self._key = key
        self._last = now


def load_picture(path, size=None):
    """The background picture as RGB: a JPEG or a PNG (the board runtime's Pillow has those
    two plugins only). size: the screen's (xres, yres); a larger JPEG is decoded at the
    smallest DCT scale that still covers it (a 1920x1080 picture on an 800x480 screen
    takes a quarter of the memory)."""
    with Image.open(path) as im:  # not formats=: that makes Pillow import every plugin it has
        if im.format not in ("JPEG", "PNG"):
            raise ValueError("%s is a %s picture, not a JPEG or PNG" % (path, im.format))
        if size and im.format == "JPEG":
            im.draft("RGB", size)
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")


def open_screen(picture_path=None, device=FB_DEVICE, fb_file=None, mode=FB_MODE):
    """A Screen on a framebuffer device, or on a file of geometry `mode` (fb_file); the
    picture loaded for that screen's size. Raises OSError, LayoutError, ValueError or
    Pillow's errors, and leaves no framebuffer open when it does."""
    dev = FileFramebuffer(fb_file, parse_mode(mode)) if fb_file else Framebuffer(device)
    try:
        g = dev.geometry
        picture = load_picture(picture_path, (g.xres, g.yres)) if picture_path else None
        return Screen(dev, picture)
    except BaseException:
        dev.close()
        raise


__all__ = ["Framebuffer", "FileFramebuffer", "FramebufferRenderer", "Geometry", "LayoutError", "PixelPacker", "Screen",
           "open_framebuffer", "open_screen", "screenshot", "parse_mode"]
