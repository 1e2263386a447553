"""The board bundle: what goes onto a board (host side; see docs/BOARD.md).

`zipapp()` writes otaunpack as one executable file: a zip with a `#!` line holding the
installer's modules (the host-only ones left out: construct and the layouts declared with
it among them, the installer reads the compiled table), and ecdsa (with six, its one
dependency) for signature checks: pure-Python dependencies on the board (click is
otapack's; Pillow is optional and native). ecdsa is imported only when a signature is checked. Each module
is stored as source and as bytecode of the building Python (unchecked-hash .pyc, so a
board with the same Python minor version never compiles; any other uses the source).
`__main__.py` passes main()'s return value to sys.exit, so the exit codes survive.
"""

import importlib.util
import io
import os
import sys
import zipfile

from .pyc import pyc

#: modules of the package that never run on a board
HOST_ONLY = ("sstarota/packer/", "sstarota/bundle.py", "sstarota/runtime.py", "sstarota/pyc.py",
             "sstarota/dropin.py", "sstarota/info.py", "sstarota/cli/otapack.py", "sstarota/cli/otabinheader.py",
             "sstarota/cli/common.py", "sstarota/cli/fbshot.py", "sstarota/opflags.py", "sstarota/layouts.py")

#: the exit code of a bundle started by a Python it cannot run on (otaunpack's own are 0-3)
WRONG_PYTHON = 4

#: __main__.py: the interpreter's version is checked first, in words any Python reads (a
#: sourceless bundle's bytecode loads only on its own minor version; the sources need 3.9)
MAIN = """import sys
if %(test)s:
    sys.stderr.write("otaunpack: this bundle needs Python %(need)s, not %%d.%%d (%(hint)s)\\n" %% sys.version_info[:2])
    sys.exit(%(code)d)
from sstarota.cli.otaunpack import main
sys.exit(main())
"""


def main_source(sourceless, version=None):
    """__main__.py of a bundle (bytes): sourceless, for exactly `version` (this Python's)."""
    major, minor = version or sys.version_info[:2]
    if sourceless:
        fields = {"test": "sys.version_info[:2] != (%d, %d)" % (major, minor), "need": "%d.%d" % (major, minor),
                  "hint": "its bytecode is for that version only: build it without --sourceless"}
    else:
        fields = {"test": "sys.version_info[:2] < (3, 9)", "need": "3.9 or later", "hint": "board-bundle --runtime ARCH carries one"}
    return (MAIN % dict(fields, code=WRONG_PYTHON)).encode()

#: a fixed timestamp: the same sources give the same bundle, byte for byte
DATE = (2020, 1, 1, 0, 0, 0)


def _package_files(pkg):
    """(arcname, path) of a package's .py files, arcname relative to its parent directory."""
    mod = importlib.import_module(pkg)
    root = os.path.dirname(os.path.abspath(mod.__file__))
    base = os.path.dirname(root)
    out = []
    for dp, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for fn in sorted(files):
            if fn.endswith(".py"):
                path = os.path.join(dp, fn)
                out.append((os.path.relpath(path, base).replace(os.sep, "/"), path))
    return out


def bundle_files():
    """(arcname, path) of every module that goes into the zipapp."""
    files = [f for f in _package_files("sstarota") if not f[0].startswith(HOST_ONLY)]
    six = importlib.import_module("six").__file__
    ecdsa = [f for f in _package_files("ecdsa") if not f[0].startswith("ecdsa/test_")]
    return files + ecdsa + [("six.py", six)]


def zipapp(out, sources=True, bytecode=True, interpreter="/usr/bin/env python3"):
    """Write the otaunpack zipapp to `out` (executable); returns its size in bytes."""
    if not (sources or bytecode):
        raise ValueError("a bundle needs sources or bytecode")
    buf = io.BytesIO()
    buf.write(b"#!" + interpreter.encode() + b"\n")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        def put(name, data):
            info = zipfile.ZipInfo(name, DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)

        main = main_source(not sources)
        put("__main__.py", main)
        if bytecode:
            put("__main__.pyc", pyc(main, "__main__.py"))  # runpy takes it: no compile at every start
        for arcname, path in bundle_files():
            with open(path, "rb") as f:
                source = f.read()
            if sources:
                put(arcname, source)
            if bytecode:
                put(arcname[:-3] + ".pyc", pyc(source, arcname))
    tmp = "%s.tmp%d" % (out, os.getpid())
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return os.stat(out).st_size


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="board-bundle", description="Write what goes onto a board: otaunpack as one "
                                 "executable zipapp (and, with --runtime, a minimal Python for a Debian arch).")
    ap.add_argument("out", help="the directory to write into (created)")
    ap.add_argument("--sourceless", action="store_true",
                    help="bytecode only (smaller; the board's Python must be %d.%d)" % sys.version_info[:2])
    ap.add_argument("--interpreter", help="the #! line (/usr/bin/env python3; with --runtime, the runtime's "
                    "/usr/bin/python3)")
    ap.add_argument("--runtime", metavar="ARCH", help="also a minimal Python runtime for this Debian architecture "
                    "(armhf, arm64, ...): python-ARCH.tar.gz and python-ARCH.sqfs")
    ap.add_argument("--no-screen", action="store_true", help="with --runtime: leave out Pillow (no framebuffer "
                    "screen; -p falls back to text progress)")
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "sstarota-runtime"),
                    help="where the Debian packages are kept (%(default)s)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    pyz = os.path.join(a.out, "otaunpack")
    interpreter = a.interpreter or ("/usr/bin/python3" if a.runtime else "/usr/bin/env python3")
    size = zipapp(pyz, sources=not a.sourceless, interpreter=interpreter)
    print("%s: %d bytes (%d KiB)" % (pyz, size, (size + 1023) // 1024))
    if a.runtime:
        from . import runtime

        runtime.build(a.runtime, a.out, a.cache, pyz, log=print, screen=not a.no_screen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
