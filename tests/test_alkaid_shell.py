"""mk/ota.mk with partition sizes computed the way ALKAID trees compute them: $(call ...) of
helpers that use bash's $[...] arithmetic inside $(shell ...), on a host whose /bin/sh may be dash
(issue 21, item 3); a size that evaluates to 0 or to no number is refused."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sstarota import package

PROJECT = Path(__file__).resolve().parent.parent
OTA_MK = PROJECT / "mk" / "ota.mk"
OTAPACK = str(Path(sys.executable).parent / "otapack")

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None,
                                reason="needs make and bash")

# helpers in the style of ALKAID's definitions.mk (written here): bash-only $[...] arithmetic
HELPERS = r"""
define multiplyhex
$(shell printf "0x%x" $$[$(1)*$(2)])
endef
define alignup
$(shell printf "0x%x" $$[($(1)+$(2)-1)&~($(2)-1)])
endef
"""


def nor_image_dir(tmp_path, size_expr):
    image = tmp_path / "image"
    out = image / "output" / "images"
    out.mkdir(parents=True)
    (out / "kernel").write_bytes(b"k" * 5000)
    (image / "makefile").write_text(
        "OTABLK := _otablk\nPATSIZE := _patsize\nFSTYPE := _fstype\nFLASH_TYPE := nor\n"
        "IMAGEDIR := $(CURDIR)/output/images\n%s\nOTA_IMAGE_LIST = kernel\nkernel$(OTABLK) = /dev/mtdblock3\n"
        "kernel$(PATSIZE) = %s\ninclude %s\n" % (HELPERS, size_expr, OTA_MK))
    return image, out


def make_images(image):
    env = {k: v for k, v in os.environ.items() if k not in ("SHELL", "MAKEFLAGS", "SSTAROTA_FORMAT")}
    return subprocess.run(["make", "-s", "-C", str(image), "ota_images", "OTA_PARTS=all", "OTA_FORMAT=0.4",
                           "OTAPACK=%s" % OTAPACK], capture_output=True, text=True, env=env)


def test_call_computed_sizes_use_bash_whatever_sh_is(tmp_path):
    image, out = nor_image_dir(tmp_path, "$(call alignup, $(call multiplyhex, 3, 0x1001), 0x1000)")
    proc = make_images(image)
    assert proc.returncode == 0, proc.stderr
    _, records = package.scan(str(out / "SStarOta.bin.gz"), strict=True)
    assert [(r.dst, r.dst_size) for r in records] == [("/dev/mtdblock3", 0x4000)]


@pytest.mark.parametrize("size", ["0x0", "0", "$(shell true)x", "0x", "12abc"])
def test_a_size_of_zero_or_no_number_is_refused(tmp_path, size):
    image, out = nor_image_dir(tmp_path, size)
    proc = make_images(image)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ota_images: error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1 and "kernel_patsize" in errors[0]
    assert not (out / "SStarOta.bin.gz").exists() and not (out / "SStarOta.bin").exists()
