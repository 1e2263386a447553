"""A minimal Python runtime for a board, from Debian's packages for its architecture (host side).

    build("armhf", out_dir, cache_dir, screen=True)

writes out_dir/python-ARCH/ (a tree rooted at the board's /), python-ARCH.tar.gz of it (files
and links only: no directory entry replaces a merged root's /lib link) and, when mksquashfs
is there, python-ARCH.sqfs of its usr/. The tree holds Debian's interpreter, the shared
libraries it and its extension modules need (glibc and OpenSSL included) in usr/lib/TRIPLE,
the ELF loader where the interpreter's header names it (lib/ld-linux-armhf.so.3, so a root
without merged /usr finds it; a copy in usr/lib for the squashfs on a merged root),
lib-dynload with only the extensions some path loads, usr/lib/pythonXY.zip with exactly
the standard modules some path imports (MODULES, SCREEN_MODULES), and with the screen
Debian's Pillow, only the part the screen loads (SCREEN_PIL). Symbolic links in the packages
are followed inside them, never on this machine.

The module sets come from the probe: make_probe() writes packages of every kind, signed ones,
a test CA and pictures into a directory, and its runner runs the bundle's otaunpack through
every case of CASES (file, stdin, http, https with --ca, every record kind, deltas, Ed25519
and P-256 signatures, the board's policy, the screen, dry run, failures) with a web server of
its own, writing each case's imports; derive() does that here, case_script() gives the cases
as a shell script for a board. tests/test_board_bundle.py checks the sets against the probe.
The modules are compiled to .pyc when this Python has the board's minor version, else
stored as sources.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from .pyc import pyc

MULTIARCH = {"armhf": "arm-linux-gnueabihf", "armel": "arm-linux-gnueabi", "arm64": "aarch64-linux-gnu",
             "amd64": "x86_64-linux-gnu", "i386": "i386-linux-gnu", "mipsel": "mipsel-linux-gnu",
             "mips64el": "mips64el-linux-gnuabi64", "riscv64": "riscv64-linux-gnu"}

#: what Python itself imports at start-up (site is not imported in the probes below)
STARTUP = ["site", "_sitebuiltins", "os", "stat", "posixpath", "genericpath", "_collections_abc", "io", "abc",
           "codecs", "encodings", "encodings.aliases", "encodings.utf_8", "encodings.latin_1", "encodings.ascii",
           "runpy", "importlib", "importlib.machinery", "importlib.util", "importlib._abc", "types", "pkgutil",
           "zipimport"]

DATE = (2020, 1, 1, 0, 0, 0)

#: the Python of the runtime (Debian 12's): the module sets below are its
PYTHON = (3, 11)

#: modules that are neither files nor extensions: in the interpreter itself, without a PyInit_
FROZEN = {"builtins", "sys", "_frozen_importlib", "_frozen_importlib_external", "_imp", "marshal", "_warnings",
          "_io", "_thread", "_weakref", "posix", "_abc", "_codecs", "_signal", "_sre", "_stat", "_string", "_ast",
          "_tokenize", "_typing"}

#: the standard modules the installer imports: derived by running the probe (CASES) with
#: Debian 12's armhf Python 3.11 on the armhf board and with this machine's 3.11, and checked
#: by tests/test_board_bundle.py, which fails when any path imports a module outside them
MODULES = [
    "__future__", "_abc", "_ast", "_bisect", "_blake2", "_bz2", "_codecs", "_collections", "_compression",
    "_datetime", "_frozen_importlib", "_frozen_importlib_external", "_functools", "_hashlib", "_imp", "_io",
    "_json", "_locale", "_opcode", "_operator", "_posixsubprocess", "_random", "_sha512", "_signal", "_socket",
    "_sre", "_ssl", "_stat", "_string", "_struct", "_thread", "_typing", "_warnings", "_weakref", "_weakrefset",
    "array", "ast", "atexit", "base64", "binascii", "bisect", "builtins", "bz2", "calendar", "collections",
    "collections.abc", "contextlib", "copy", "copyreg", "dataclasses", "datetime", "dis", "email",
    "email._encoded_words", "email._parseaddr", "email._policybase", "email.base64mime", "email.charset",
    "email.encoders", "email.errors", "email.feedparser", "email.header", "email.iterators", "email.message",
    "email.parser", "email.quoprimime", "email.utils", "encodings.idna", "enum", "errno", "fcntl", "fnmatch",
    "functools", "hashlib", "hmac", "http", "http.client", "importlib._bootstrap",
    "importlib._bootstrap_external", "inspect", "ipaddress", "itertools", "json", "json.decoder", "json.encoder",
    "json.scanner", "keyword", "linecache", "locale", "marshal", "math", "opcode", "operator", "os.path",
    "platform", "posix", "quopri", "random", "re", "re._casefix", "re._compiler", "re._constants", "re._parser",
    "reprlib", "select", "selectors", "shutil", "signal", "socket", "ssl", "string", "stringprep", "struct",
    "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "token", "tokenize", "traceback", "typing",
    "typing.io", "typing.re", "unicodedata", "urllib", "urllib.parse", "warnings", "weakref", "zlib"
]
#: the standard modules the screen adds (Pillow's imports and fb.py's)
SCREEN_MODULES = [
    "_decimal", "decimal", "fractions", "logging", "ntpath", "numbers", "pathlib"
]
#: Pillow's modules the screen loads (Debian 12's Pillow 9.4 and a newer one), without those
#: only Image.preinit() tries (the BMP, GIF and PPM plugins: absent, they are skipped) and
#: _imagingft (FreeType; the screen draws with Pillow's built-in bitmap font). The TIFF
#: plugin stays: the JPEG plugin reads EXIF with it. fb.load_picture opens JPEG and PNG only.
SCREEN_PIL = [
    "PIL", "PIL.ExifTags", "PIL.GimpGradientFile",
    "PIL.GimpPaletteFile", "PIL.Image", "PIL.ImageChops", "PIL.ImageColor", "PIL.ImageDraw",
    "PIL.ImageFile", "PIL.ImageFilter", "PIL.ImageFont", "PIL.ImageMode", "PIL.ImageOps", "PIL.ImagePalette",
    "PIL.ImageSequence", "PIL.ImageStat", "PIL.ImageText", "PIL.JpegImagePlugin", "PIL.JpegPresets",
    "PIL.PaletteFile", "PIL.PngImagePlugin", "PIL.TiffImagePlugin", "PIL.TiffTags",
    "PIL._binary", "PIL._deprecate", "PIL._imaging", "PIL._util", "PIL._version"
]


def _sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


#: Debian's packages of the runtime ({py}: python3.11, ...): the interpreter, its standard
#: library, glibc and the libraries Python and its extensions link (OpenSSL for https)
PACKAGES = ["{py}-minimal", "lib{py}-minimal", "lib{py}-stdlib", "libc6", "zlib1g", "libexpat1", "libbz2-1.0",
            "libgcc-s1", "libssl3"]
#: the screen's: Debian's Pillow and what its _imaging extension links (it is built with
#: every codec; the runtime carries only the JPEG and PNG plugins of its Python side)
SCREEN_PACKAGES = ["python3-pil", "libjpeg62-turbo", "libopenjp2-7", "libimagequant0", "libtiff6", "libxcb1",
                   "libwebp7", "libzstd1", "liblzma5", "libjbig0", "libdeflate0", "liblerc4", "libstdc++6", "libxau6",
                   "libxdmcp6", "libbsd0", "libmd0", "libgomp1"]


def fetch(arch, cache, log=print):
    """Debian's packages for `arch`, downloaded once into cache/arch; returns the .debs."""
    d = os.path.join(cache, arch)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".lock"), "w") as lock:  # one download at a time (parallel builds, tests)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(arch, d, log)


def _fetch_locked(arch, d, log):
    stamp = os.path.join(d, "complete")
    wanted = " ".join(PACKAGES + SCREEN_PACKAGES)
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb"))
    if arch not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                  text=True).stdout.split() + [_native_arch()]:
        raise SystemExit("runtime: add the architecture first: dpkg --add-architecture %s && apt-get update" % arch)
    deps = subprocess.run(["apt-cache", "depends", "python3-minimal:%s" % arch], capture_output=True, text=True).stdout
    m = re.search(r"Depends: (python3\.\d+)-minimal", deps)
    if not m:
        raise SystemExit("runtime: apt knows no python3-minimal:%s (apt-get update?)" % arch)
    names = [n.format(py=m.group(1)) for n in PACKAGES + SCREEN_PACKAGES]
    log("runtime: downloading %s" % " ".join("%s:%s" % (n, arch) for n in names))
    for f in os.listdir(d):
        if f.endswith(".deb"):
            os.unlink(os.path.join(d, f))
    p = subprocess.run(["apt-get", "download", "-qq"] + ["%s:%s" % (n, arch) for n in names], cwd=d,
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit("runtime: apt-get download failed: %s" % (p.stderr.strip().splitlines() or ["?"])[-1])
    with open(stamp, "w") as f:
        f.write(wanted)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb"))


def _native_arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()


#: the probe's cases: otaunpack's arguments (run in the probe directory; {http} and {https}
#: are the probe's own web server), what stdin holds, and whether the case draws the screen
CASES = [
    ("help", ["--help"]), ("version", ["--version"]), ("usage", ["--no-such-option"]), ("no-value", ["-x"]),
    ("rejected", ["-r", "bad.bin", "--root", "root/rejected"]),
    ("dry-run-json", ["-x", "p.bin.gz", "--root", "root/dry", "--dry-run", "--progress-fd", "1"]),
    ("stdin", ["-r", "-", "-t", "tmp", "--root", "root/stdin", "--dry-run", "-q"], "p.bin"),
    ("install", ["-x", "p.bin.gz", "--root", "root/install", "-t", "tmp", "--debug"]),
    ("in-place", ["-x", "p.bin.gz", "--root", "root/install", "-t", "tmp", "--state-dir", "state"]),
    ("http", ["-x", "{http}/p.bin.gz", "--root", "root/http", "-t", "tmp", "-q"]),
    ("https-ca", ["-x", "{https}/p.bin.gz", "--ca", "ca.crt", "--root", "root/https", "-t", "tmp", "--no-spool"]),
    ("https-other-ca", ["-x", "{https}/p.bin.gz", "--ca", "other.crt", "--root", "root/https", "-t", "tmp"]),
    ("http-missing", ["-x", "{http}/nothing.bin.gz", "--root", "root/http", "-t", "tmp"]),
    ("signed-ed25519", ["-r", "ed25519.bin", "--root", "root/keyed", "-t", "tmp"]),
    ("signed-p256", ["-r", "p256.bin", "--root", "root/keyed", "-t", "tmp", "--key", "p256.pub"]),
    ("unsigned", ["-r", "unsigned.bin", "--root", "root/keyed", "-t", "tmp"]),
    ("unknown-key", ["-r", "other-key.bin", "--root", "root/keyed", "-t", "tmp"]),
    ("other-board", ["-r", "other-board.bin", "--root", "root/keyed", "-t", "tmp", "--key", "p256.pub"]),
    ("downgrade", ["-r", "old.bin", "--root", "root/keyed", "-t", "tmp"]),
    ("screen-jpg", ["-x", "p.bin.gz", "--root", "root/screen", "-t", "tmp", "-p", "pic.jpg", "--fb-file", "fb16",
                    "--fb-mode", "320x240-16"], None, True),
    ("screen-png-url", ["-x", "{http}/p.bin.gz", "--root", "root/screen2", "-t", "tmp", "-p", "pic.png",
                        "--fb-file", "fb32", "--fb-mode", "800x480-32"], None, True),
    ("screen-failed", ["-r", "fail.bin", "--root", "root/fail", "-t", "tmp", "-p", "pic.jpg", "--fb-file", "fb24",
                       "--fb-mode", "640x480-rgb888"], None, True),
    ("screen-rejected", ["-r", "bad.bin", "--root", "root/rejected", "-p", "pic.png", "--fb-file", "fb16",
                         "--fb-mode", "320x240-bgr565"], None, True),
]

#: the probe's runner: `python runner.py OTAUNPACK OUT [CASE..]` in the probe directory runs
#: the cases (each in a process of its own, `python -S`, whose imports are written to
#: OUT/<case>.mods) with a web server of its own (http and https, in another process: its
#: imports are not counted). Pillow comes from PYTHONPATH (-S leaves out site-packages).
RUNNER = r"""
import json, os, shutil, subprocess, sys
pyz, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
os.makedirs(out, exist_ok=True)
cases = [c for c in json.load(open("cases.json")) if c[0] in sys.argv[3:] or not sys.argv[3:]]
HOOK = '''
import atexit, runpy, sys
def dump(log=sys.argv.pop()):
    names = [n for n, m in sys.modules.items() if type(m).__name__ != 'Deferred']
    open(log, 'w').write(' '.join(sorted(names)))
atexit.register(dump)
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0])
runpy.run_path(sys.argv[0], run_name='__main__')
'''
for f in os.listdir("."):
    if f.startswith("fb"):
        os.unlink(f)
server = subprocess.Popen([sys.executable, "server.py"], stdout=subprocess.PIPE, text=True)
ports = server.stdout.readline().split()
urls = {"http": "http://127.0.0.1:%s" % ports[0], "https": "https://127.0.0.1:%s" % ports[1]}
shutil.rmtree("root", ignore_errors=True)
shutil.rmtree("state", ignore_errors=True)
os.makedirs("tmp", exist_ok=True)
codes = {}
try:
    for name, args, stdin, screen in cases:
        if "--root" in args:
            root = args[args.index("--root") + 1]
            if not os.path.isdir(root):
                shutil.copytree("template", root)
                if root.endswith("keyed"):
                    shutil.copytree("template-keyed", root, dirs_exist_ok=True)
        argv = [a.format(**urls) for a in args]
        log = os.path.join(out, name + ".mods")
        p = subprocess.run([sys.executable, "-S", "-c", HOOK, pyz] + argv + [log],
                           stdin=open(stdin, "rb") if stdin else subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, name + ".err"), "w"))
        codes[name] = p.returncode
finally:
    server.kill()
    server.wait()
old = json.load(open(os.path.join(out, "codes.json"))) if os.path.exists(os.path.join(out, "codes.json")) else {}
old.update(codes)
json.dump(old, open(os.path.join(out, "codes.json"), "w"), indent=1, sort_keys=True)
"""

#: the probe's web server: the directory over http and https (server.crt, signed by ca.crt)
SERVER = r"""
import http.server, ssl, sys, threading
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
def serve(tls):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain("server.crt", "server.key")
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s.server_address[1]
print(serve(False), serve(True), flush=True)
threading.Event().wait()
"""

#: what every case must answer (otaunpack's exit codes): the probe really took each path
EXPECTED = {"help": 0, "version": 0, "usage": 2, "no-value": 2, "rejected": 3, "dry-run-json": 0, "stdin": 0,
            "install": 0, "in-place": 0, "http": 0, "https-ca": 0, "https-other-ca": 2, "http-missing": 2,
            "signed-ed25519": 0, "signed-p256": 0, "unsigned": 3, "unknown-key": 3, "other-board": 3, "downgrade": 3,
            "screen-jpg": 0, "screen-png-url": 0, "screen-failed": 1, "screen-rejected": 3}


def _openssl(d, *args):
    _sh(["openssl"] + list(args), cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_probe(d, python=sys.executable):
    """The probe directory: packages of every kind (made by this project's otapack), signed
    ones, a test CA, pictures, runner.py and server.py. Runs anywhere with relative paths."""
    from PIL import Image

    from . import signing

    os.makedirs(d, exist_ok=True)

    def otapack(*args):
        _sh([python, "-m", "sstarota.cli.otapack"] + [str(a) for a in args], cwd=d, stdout=subprocess.DEVNULL)

    def put(name, data, mode="wb"):
        with open(os.path.join(d, name), mode) as f:
            f.write(data)

    old = os.urandom(200000)
    new = old[:1000] + b"changed" + old[1000:]
    put("old", old)
    put("new", new)
    put("s.sh", "true\n", "w")
    put("fail.sh", "exit 1\n", "w")
    put("f.txt", "signed\n", "w")
    t = os.path.join(d, "template")
    for sub in ("dev", "bin", "etc"):
        os.makedirs(os.path.join(t, sub), exist_ok=True)
    for name in ("dev/mtd1", "bin/app"):
        put(os.path.join("template", name), old)
    put("template/dev/mtd0", b"")
    put("template/dev/ubi0_0", b"")
    put("template/etc/gone", "x", "w")
    steps = [["-c", "p.bin", "--manifest", "-b", "s.sh", "-e", "s.sh"],
             ["-a", "p.bin", "-s", "new", "-d", "/dev/mtd0", "--block-update"],
             ["-a", "p.bin", "-s", "new", "-d", "/dev/ubi0_0", "--ubi-update"],
             ["-a", "p.bin", "-s", "s.sh", "-d", "/etc/a.conf", "--file-update"],
             ["-a", "p.bin", "-s", "s.sh", "-d", "/etc/b.conf", "--file-add"],
             ["-a", "p.bin", "-d", "/etc/gone", "--file-delete"],
             ["-a", "p.bin", "-o", "old", "-n", "new", "-d", "/bin/app", "--file-update-diff"],
             ["-a", "p.bin", "-o", "old", "-n", "new", "-d", "/dev/mtd1", "--file-update-diff"],
             ["-a", "p.bin", "-s", "s.sh", "-d", "s.sh", "--script-add"],
             ["--gzip", "p.bin", "-k"],
             ["-c", "fail.bin", "-b", "fail.sh"], ["-a", "fail.bin", "-s", "f.txt", "-d", "/etc/f.txt", "--file-add"]]
    for step in steps:
        otapack(*step)
    data = bytearray(open(os.path.join(d, "p.bin"), "rb").read())
    data[len(data) // 2] ^= 1
    put("bad.bin", bytes(data))
    for alg in ("ed25519", "p256"):
        signing.generate(os.path.join(d, alg), alg)
    signing.generate(os.path.join(d, "other"), "ed25519")
    for name, key, board, version in (("ed25519", "ed25519", "cam-a", "5"), ("p256", "p256", "cam-a", "6"),
                                      ("unsigned", None, "cam-a", "7"), ("other-key", "other", "cam-a", "7"),
                                      ("other-board", "p256", "cam-b", "7"), ("old", "ed25519", "cam-a", "1")):
        pkg = name + ".bin"
        otapack("-c", pkg, "--manifest", "--compatible", board, "--fw-version", version)
        otapack("-a", pkg, "-s", "f.txt", "-d", "/etc/f.txt", "--file-update")
        if key:
            otapack("-a", pkg, "--sign", key)
    os.makedirs(os.path.join(d, "template-keyed/etc/sstarota/keys"))
    shutil.copy(os.path.join(d, "ed25519.pub"), os.path.join(d, "template-keyed/etc/sstarota/keys/ed25519.pem"))
    put("template-keyed/etc/sstarota/board.conf", "compatible = cam-a\n", "w")
    for name in ("ca", "other"):
        _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                 "-subj", "/CN=probe %s" % name, "-keyout", name + ".key", "-out", name + ".crt")
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr")
    put("san.ext", "subjectAltName=IP:127.0.0.1,IP:10.0.2.2\n", "w")  # this machine, and as a qemu guest sees it
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "3650", "-extfile", "san.ext", "-out", "server.crt")
    pic = Image.new("RGB", (320, 240), (30, 60, 120))
    pic.save(os.path.join(d, "pic.jpg"), quality=85)
    pic.save(os.path.join(d, "pic.png"))
    put("cases.json", json.dumps([list(c) + [None, False][len(c) - 2:] for c in CASES]), "w")
    put("runner.py", RUNNER, "w")
    put("server.py", SERVER, "w")
    return d


class Served:
    """The probe directory over http and https (server.py, run by this Python) until stop()."""

    def __init__(self, d, python=sys.executable):
        self.proc = subprocess.Popen([python, "server.py"], cwd=d, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()  # the server's ports, once it listens
        if len(line) != 2:
            self.stop()
            raise RuntimeError("the probe's web server did not start")
        self.ports = {"http": int(line[0]), "https": int(line[1])}

    def urls(self, host="127.0.0.1"):
        return {k: "%s://%s:%d" % (k, host, port) for k, port in self.ports.items()}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def case_runs(urls):
    """(name, argv, stdin file or None, draws the screen) of every case, URLs filled in
    (urls: {"http": "http://host:port", "https": ...})."""
    out = []
    for case in CASES:
        name, args, stdin, screen = (list(case) + [None, False][len(case) - 2:])[:4]
        out.append((name, [a.format(**urls) for a in args], stdin, screen))
    return out


def case_script(otaunpack, urls, out="out"):
    """The cases as one POSIX shell script (a board's busybox runs it in the probe directory):
    each case's stderr in OUT/<case>.err, the exit codes in OUT/codes as 'case code' lines."""
    def q(a):
        return "'" + a.replace("'", "'\\''") + "'"

    lines = ["rm -rf root state %s && mkdir -p %s tmp" % (out, out)]
    for name, argv, stdin, _ in case_runs(urls):
        if "--root" in argv:
            root = argv[argv.index("--root") + 1]
            lines.append("[ -d %s ] || { mkdir -p %s && cp -a template/. %s/%s; }"
                         % (root, root, root, " && cp -a template-keyed/. %s/" % root if root.endswith("keyed")
                                                else ""))
        lines.append("%s %s < %s > /dev/null 2> %s/%s.err; echo %s $? >> %s/codes"
                     % (otaunpack, " ".join(q(a) for a in argv), stdin or "/dev/null", out, name, name, out))
    return "\n".join(lines) + "\n"


def read_probe(out):
    """{case: sorted module names} and {case: exit code} of a finished probe run."""
    with open(os.path.join(out, "codes.json")) as f:
        codes = json.load(f)
    mods = {}
    for name in codes:
        path = os.path.join(out, name + ".mods")
        mods[name] = open(path).read().split() if os.path.exists(path) else []
    return mods, codes


def derive(pyz, python=sys.executable, work=None):
    """Run the probe with `python` on this machine: ({case: modules}, {case: exit code})."""
    import PIL

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(PIL.__file__))))
    with tempfile.TemporaryDirectory() as t:
        d = make_probe(work or os.path.join(t, "probe"))
        _sh([python, "runner.py", os.path.abspath(pyz), "out"], cwd=d, env=env)
        return read_probe(os.path.join(d, "out"))


def standard(names):
    """Of a probe's module names, the standard library's (Python's own and its extensions)."""
    ours = ("sstarota", "construct", "ecdsa", "six", "PIL", "__main__")
    return sorted(n for n in set(names) if n and n.split(".")[0] not in ours)

def _needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _interp(path):
    out = subprocess.run(["readelf", "-l", path], capture_output=True, text=True).stdout
    m = re.search(r"program interpreter: ([^\]]+)\]", out)
    return m.group(1) if m else None


def build(arch, out, cache, pyz=None, log=print, screen=True, modules=None):
    """Write python-ARCH/, python-ARCH.tar.gz and python-ARCH.sqfs into `out`: with `screen`,
    Pillow for the framebuffer screen too. `modules` (default: MODULES, plus SCREEN_MODULES
    with the screen) are the standard modules that go into the zip. Returns the tree."""
    triple = MULTIARCH.get(arch)
    if triple is None:
        raise SystemExit("runtime: unknown architecture %s (known: %s)" % (arch, " ".join(sorted(MULTIARCH))))
    debs = [d for d in fetch(arch, cache, log) if screen or not os.path.basename(d).startswith(
        tuple(n + "_" for n in SCREEN_PACKAGES))]
    if modules is None:
        modules = MODULES + (SCREEN_MODULES if screen else [])
    with tempfile.TemporaryDirectory() as stage:
        for deb in debs:
            _sh(["dpkg-deb", "-x", deb, stage])
        exe = sorted(f for f in os.listdir(os.path.join(stage, "usr/bin")) if re.match(r"^python3\.\d+$", f))[0]
        ver = exe[len("python"):]
        stdlib = os.path.join(stage, "usr/lib", exe)
        tree = os.path.join(out, "python-%s" % arch)
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(os.path.join(tree, "usr/bin"))
        shutil.copy2(os.path.join(stage, "usr/bin", exe), os.path.join(tree, "usr/bin", exe))
        os.symlink(exe, os.path.join(tree, "usr/bin/python3"))
        compiled = "%d.%d" % sys.version_info[:2] == ver
        zname = "usr/lib/python%s.zip" % ver.replace(".", "")
        elves = [os.path.join(tree, "usr/bin", exe)]
        os.makedirs(os.path.join(tree, "usr/lib"), exist_ok=True)
        count = _zip_modules(sorted(set(STARTUP + list(modules))), os.path.join(tree, zname), stdlib, exe, compiled,
                             tree, elves)
        if screen:
            elves += _copy_pillow(stage, tree, compiled)
        loader = _copy_libraries(stage, tree, triple, elves)
    tgz = os.path.join(out, "python-%s.tar.gz" % arch)
    with tarfile.open(tgz, "w:gz", compresslevel=9) as t:
        for path in _members(tree, skip="usr/" + loader):
            t.add(os.path.join(tree, path), arcname="./" + path, recursive=False, filter=_root_owned)
    made = [(tgz, os.path.getsize(tgz))]
    if shutil.which("mksquashfs"):
        sq = os.path.join(out, "python-%s.sqfs" % arch)
        _sh(["mksquashfs", os.path.join(tree, "usr"), sq, "-comp", "xz", "-noappend", "-all-root", "-quiet",
             "-no-progress"], stdout=subprocess.DEVNULL)
        made.append((sq, os.path.getsize(sq)))
    total = unpacked_size(tree)
    log("%s/: Python %s for %s, %d modules (%s)%s, %d KiB unpacked (the interpreter %d KiB, glibc included)"
        % (tree, ver, arch, count, ".pyc" if compiled else "sources: this Python is not %s" % ver,
           ", Pillow for the screen" if screen else "", total // 1024,
           os.path.getsize(os.path.join(tree, "usr/bin", exe)) // 1024))
    for path, size in made:
        log("%s: %d KiB" % (path, size // 1024))
    return tree


def unpacked_size(tree):
    """Bytes of the runtime's files once unpacked at a board's / (the loader counted once)."""
    seen = set()
    total = 0
    for dp, _, fs in os.walk(tree):
        for f in fs:
            st = os.lstat(os.path.join(dp, f))
            if not os.path.islink(os.path.join(dp, f)) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _members(tree, skip):
    """The tarball's members: files and symlinks only, no directory entries (extracting a
    `lib/` entry would replace a merged-/usr root's /lib symlink with a directory)."""
    out = []
    for dp, dirs, fs in os.walk(tree):
        dirs.sort()
        for f in sorted(fs + [x for x in dirs if os.path.islink(os.path.join(dp, x))]):
            rel = os.path.relpath(os.path.join(dp, f), tree)
            if rel != skip:
                out.append(rel)
    return out


def _in_stage(stage, path):
    """`path` (absolute, as the board sees it) inside the unpacked packages, symlinks followed
    inside the stage (an absolute link means the board's /, never this machine's), and the
    merged-/usr aliases tried (/lib and /usr/lib are one directory on the board)."""
    parts = [p for p in path.split("/") if p]
    for _ in range(40):
        cur = stage
        for i, part in enumerate(parts):
            nxt = os.path.join(cur, part)
            if not os.path.lexists(nxt) and cur == stage and part in ("lib", "lib64", "bin", "sbin"):
                nxt = os.path.join(stage, "usr", part)
            elif not os.path.lexists(nxt) and cur == stage and part == "usr" and len(parts) > i + 1:
                nxt = os.path.join(stage, parts[i + 1])
                if os.path.lexists(nxt):
                    parts = parts[:i] + parts[i + 1:]
                    break
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                base = [] if target.startswith("/") else parts[:i]
                parts = base + [p for p in target.split("/") if p] + parts[i + 1:]
                parts = _normalise(parts)
                break
            cur = nxt
        else:
            if os.path.isfile(cur):
                return cur
            raise SystemExit("runtime: %s is not in the packages" % path)
    raise SystemExit("runtime: %s: too many levels of symbolic links in the packages" % path)


def _normalise(parts):
    out = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        elif p != ".":
            out.append(p)
    return out


def _zip_modules(modules, zpath, stdlib, exe, compiled, tree, elves):
    """The standard modules into the zip (.pyc when this Python is the board's version);
    extension modules into lib-dynload (added to elves). Returns how many went into the zip."""
    dynload = os.path.join(stdlib, "lib-dynload")
    with open(elves[0], "rb") as f:
        builtin = f.read()  # the interpreter: its built-in modules' PyInit_ names
    count = 0
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in modules:
            rel = name.replace(".", "/")
            for cand in (rel + "/__init__.py", rel + ".py"):
                src = os.path.join(stdlib, cand)
                if os.path.isfile(src):
                    _put_module(z, src, cand, "/usr/lib/%s/%s" % (exe, cand), compiled)
                    count += 1
                    break
            else:
                sos = [so for so in (os.listdir(dynload) if os.path.isdir(dynload) else ())
                       if so.startswith(name + ".cpython-")]
                for so in sos:
                    dst = os.path.join(tree, "usr/lib", exe, "lib-dynload", so)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copy2(os.path.join(dynload, so), dst)
                    elves.append(dst)
                parent = name.rpartition(".")[0].replace(".", "/")
                alias = parent and os.path.isfile(os.path.join(stdlib, parent + ".py"))  # os.path, typing.io
                if not (sos or alias or name in FROZEN or b"PyInit_" + name.encode() + b"\0" in builtin):
                    raise SystemExit("runtime: %s is not in %s's packages (neither a module nor built in)" % (name, exe))
    return count


def _put_module(z, src, arcname, shown, compiled):
    with open(src, "rb") as f:
        data = f.read()
    if compiled:
        z.writestr(_info(arcname + "c"), pyc(data, shown))
    else:
        z.writestr(_info(arcname), data)


def _copy_pillow(stage, tree, compiled):
    """Debian's Pillow, only what the screen loads (SCREEN_PIL: the JPEG and PNG plugins, no
    other codec's), into usr/lib/python3/dist-packages/PIL: bytecode (or sources) and the
    _imaging extension. Returns the ELF files copied."""
    src = os.path.join(stage, "usr/lib/python3/dist-packages/PIL")
    dst = os.path.join(tree, "usr/lib/python3/dist-packages/PIL")
    os.makedirs(dst)
    elves = []
    for name in SCREEN_PIL:
        leaf = name.split(".", 1)[1] if "." in name else "__init__"
        py = os.path.join(src, leaf + ".py")
        if os.path.isfile(py):
            with open(py, "rb") as f:
                data = f.read()
            if compiled:
                with open(os.path.join(dst, leaf + ".pyc"), "wb") as f:
                    f.write(pyc(data, "/usr/lib/python3/dist-packages/PIL/%s.py" % leaf))
            else:
                shutil.copy2(py, os.path.join(dst, leaf + ".py"))
            continue
        sos = [f for f in os.listdir(src) if f.startswith(leaf + ".cpython-")]
        if not sos:
            if name in ("PIL", "PIL.Image", "PIL._imaging", "PIL.JpegImagePlugin", "PIL.PngImagePlugin"):
                raise SystemExit("runtime: Pillow's %s is not in python3-pil" % name)
            continue  # SCREEN_PIL holds what two Pillow versions load; this one has no such module
        shutil.copy2(os.path.join(src, sos[0]), os.path.join(dst, sos[0]))
        elves.append(os.path.join(dst, sos[0]))
    return elves


def _copy_libraries(stage, tree, triple, elves):
    """The shared libraries the ELF files need (NEEDED, transitively) into usr/lib/TRIPLE, and
    the ELF interpreter where the interpreter's header names it (lib/ld-linux-armhf.so.3 on
    armhf: on a root without merged /usr that is not usr/lib), with a copy under usr/ for
    the squashfs (its usr/ alone is a merged-/usr root's /usr). Returns the loader's path
    relative to the root ('' when there is none)."""
    libdirs = ["lib/" + triple, "usr/lib/" + triple, "lib", "usr/lib"]
    todo = list(elves)
    seen = set()
    interp = _interp(elves[0])
    rel = ""
    if interp:
        rel = interp.lstrip("/")
        real = _in_stage(stage, interp)
        dst = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(real, dst)
        alias = os.path.join(tree, "usr", rel)
        os.makedirs(os.path.dirname(alias), exist_ok=True)
        os.link(dst, alias)
        seen.add(os.path.basename(rel))
    while todo:
        elf = todo.pop()
        for lib in _needed(elf):
            if lib in seen:
                continue
            seen.add(lib)
            for d in libdirs:
                src = os.path.join(stage, d, lib)
                if os.path.lexists(src):
                    dst = os.path.join(tree, "usr/lib", triple, lib)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copy2(_in_stage(stage, "/" + d + "/" + lib), dst)
                    todo.append(dst)
                    break
            else:
                raise SystemExit("runtime: %s needs %s, not in the packages" % (elf, lib))
    return rel


def _info(name):
    info = zipfile.ZipInfo(name, DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _root_owned(info):
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 1577836800
    return info
