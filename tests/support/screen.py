"""The progress screen in the tests: a picture of four coloured quadrants, and what the bar shows."""

from PIL import Image, ImageDraw

from sstarota import fb

QUADRANTS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 230, 40)]


def quadrant_picture(path, size=(800, 450)):
    im = Image.new("RGB", size)
    d = ImageDraw.Draw(im)
    w, h = size
    for i, colour in enumerate(QUADRANTS):
        x, y = (i % 2) * w // 2, (i // 2) * h // 2
        d.rectangle((x, y, x + w // 2 - 1, y + h // 2 - 1), fill=colour)
    im.save(path)
    return path


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def bar_fraction(img, box):
    """The filled fraction of the bar, measured along its middle row."""
    ix, iy, iw, ih = box.inner
    y = iy + ih // 2
    filled = sum(1 for x in range(ix, ix + iw) if img.getpixel((x, y)) != img.getpixel((ix + iw - 1, y))
                 or close(img.getpixel((x, y)), fb.BAR_FILL, 40) or close(img.getpixel((x, y)), fb.BAR_FAIL, 40))
    return filled / iw


def bar_state(img, box):
    """(colour, filled fraction to 0.01) of the bar along its middle row."""
    ix, iy, iw, ih = box.inner
    y = iy + ih // 2
    row = [img.getpixel((x, y)) for x in range(ix, ix + iw)]
    for name, colour in (("fail", fb.BAR_FAIL), ("fill", fb.BAR_FILL)):
        n = sum(1 for p in row if close(p, colour, 8))
        if n:
            return name, round(n / iw, 2)
    return "empty", 0.0
