"""A minimal Python runtime for a board, from Debian's packages for its architecture (host side).

    build("armhf", out_dir, cache_dir, zipapp_path)

writes out_dir/python-ARCH/ (a tree rooted at the board's /), python-ARCH.tar.gz of it and,
when mksquashfs is there, python-ARCH.sqfs of its usr/ (mountable at /usr on a merged-/usr
rootfs). The tree holds Debian's interpreter, the shared libraries it and its extension
modules need (glibc included), lib-dynload with only the extensions the installer loads,
and usr/lib/pythonXY.zip with exactly the standard modules the installer imports: found by
running the bundle's otaunpack on this machine through every path an install takes
(records of every kind, a delta, a manifest, --dry-run, stdin, a rejected package, usage
errors, --help). The modules are compiled to .pyc when this Python has the board's minor
version, else stored as sources. Pillow is not included: the framebuffer screen needs the
board's own Pillow (without it, -p falls back to text progress).
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

MULTIARCH = {"armhf": "arm-linux-gnueabihf", "armel": "arm-linux-gnueabi", "arm64": "aarch64-linux-gnu",
             "amd64": "x86_64-linux-gnu", "i386": "i386-linux-gnu", "mipsel": "mipsel-linux-gnu",
             "mips64el": "mips64el-linux-gnuabi64", "riscv64": "riscv64-linux-gnu"}

#: what Python itself imports at start-up (site is not imported in the probes below)
STARTUP = ["site", "_sitebuiltins", "os", "stat", "posixpath", "genericpath", "_collections_abc", "io", "abc",
           "codecs", "encodings", "encodings.aliases", "encodings.utf_8", "encodings.latin_1", "encodings.ascii",
           "runpy", "importlib", "importlib.machinery", "importlib.util", "importlib._abc", "types", "pkgutil",
           "zipimport"]

DATE = (2020, 1, 1, 0, 0, 0)


def _sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fetch(arch, cache, log=print):
    """Debian's Python packages for `arch`, downloaded once into cache/arch; returns the .debs."""
    d = os.path.join(cache, arch)
    os.makedirs(d, exist_ok=True)
    debs = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb"))
    if debs and os.path.exists(os.path.join(d, "complete")):
        return debs
    if arch not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                  text=True).stdout.split() + [_native_arch()]:
        raise SystemExit("runtime: add the architecture first: dpkg --add-architecture %s && apt-get update" % arch)
    deps = subprocess.run(["apt-cache", "depends", "python3-minimal:%s" % arch], capture_output=True, text=True).stdout
    m = re.search(r"Depends: (python3\.\d+)-minimal", deps)
    if not m:
        raise SystemExit("runtime: apt knows no python3-minimal:%s (apt-get update?)" % arch)
    py = m.group(1)
    names = ["%s-minimal" % py, "lib%s-minimal" % py, "lib%s-stdlib" % py, "libc6", "zlib1g", "libexpat1",
             "libbz2-1.0", "libgcc-s1"]
    log("runtime: downloading %s" % " ".join("%s:%s" % (n, arch) for n in names))
    _sh(["apt-get", "download", "-qq"] + ["%s:%s" % (n, arch) for n in names], cwd=d, stderr=subprocess.DEVNULL)
    open(os.path.join(d, "complete"), "w").close()
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".deb"))


def _native_arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()


def installer_modules(pyz, python=sys.executable):
    """The standard modules the bundle's otaunpack imports, over every path an install takes."""
    with tempfile.TemporaryDirectory() as t:
        log = os.path.join(t, "modules.txt")
        probe = ("import atexit, runpy, sys\n"
                 "def dump():\n"
                 "    # stand-ins (cli.process.LAZY) never used are not needed\n"
                 "    names = [n for n, m in sys.modules.items() if type(m).__name__ != 'Deferred']\n"
                 "    open(%r, 'a').write('\\n'.join(names) + '\\n')\n"
                 "atexit.register(dump)\n"
                 "sys.argv = sys.argv[1:]\n"
                 "sys.path.insert(0, sys.argv[0])\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n" % log)
        otapack = [python, "-m", "sstarota.cli.otapack"]
        root = os.path.join(t, "root")
        for sub in ("dev", "etc", "bin"):
            os.makedirs(os.path.join(root, sub))
        old = os.urandom(200000)
        with open(os.path.join(t, "old"), "wb") as f:
            f.write(old)
        with open(os.path.join(t, "new"), "wb") as f:
            f.write(old[:1000] + b"changed" + old[1000:])
        for name in ("dev/mtd1", "bin/app"):
            shutil.copy(os.path.join(t, "old"), os.path.join(root, name))
        with open(os.path.join(root, "etc/gone"), "w") as f:
            f.write("x")
        with open(os.path.join(t, "s.sh"), "w") as f:
            f.write("true\n")
        pkg = os.path.join(t, "p.bin")
        steps = [["-c", pkg, "--manifest", "-b", os.path.join(t, "s.sh"), "-e", os.path.join(t, "s.sh")],
                 ["-a", pkg, "-s", os.path.join(t, "new"), "-d", "/dev/mtd0", "--block-update"],
                 ["-a", pkg, "-s", os.path.join(t, "new"), "-d", "/dev/ubi0_0", "--ubi-update"],
                 ["-a", pkg, "-s", os.path.join(t, "s.sh"), "-d", "/etc/a.conf", "--file-update"],
                 ["-a", pkg, "-s", os.path.join(t, "s.sh"), "-d", "/etc/b.conf", "--file-add"],
                 ["-a", pkg, "-d", "/etc/gone", "--file-delete"],
                 ["-a", pkg, "-o", os.path.join(t, "old"), "-n", os.path.join(t, "new"), "-d", "/bin/app",
                  "--file-update-diff"],
                 ["-a", pkg, "-o", os.path.join(t, "old"), "-n", os.path.join(t, "new"), "-d", "/dev/mtd1",
                  "--file-update-diff"],
                 ["-a", pkg, "-s", os.path.join(t, "s.sh"), "-d", "s.sh", "--script-add"],
                 ["--gzip", pkg, "-k"]]
        for step in steps:
            _sh(otapack + step, stdout=subprocess.DEVNULL)
        bad = os.path.join(t, "bad.bin")
        data = bytearray(open(pkg, "rb").read())
        data[len(data) // 2] ^= 1
        open(bad, "wb").write(bytes(data))
        runs = [["--help"], ["--no-such-option"], ["-x"], ["-r", bad, "--root", root],
                ["-x", pkg + ".gz", "--root", root, "--dry-run", "--progress-fd", "1"],
                ["-r", "-", "-t", t, "--root", root, "--dry-run", "-q"],
                ["-x", pkg + ".gz", "--root", root, "-t", t, "--debug"],
                ["-x", pkg + ".gz", "--root", root, "-t", t]]
        for args in runs:
            stdin = open(pkg, "rb") if "-" in args else subprocess.DEVNULL
            subprocess.run([python, "-S", "-c", probe, pyz] + args, stdin=stdin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        names = set(open(log).read().split())
    names.update(STARTUP)
    # _hashlib would bring OpenSSL's libcrypto (4 MB): hashlib falls back to the built-in SHA-256
    return sorted(n for n in names if n and n != "_hashlib" and not n.startswith(("sstarota", "construct", "__main__")))


def _needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _interp(path):
    out = subprocess.run(["readelf", "-l", path], capture_output=True, text=True).stdout
    m = re.search(r"program interpreter: ([^\]]+)\]", out)
    return m.group(1) if m else None


def build(arch, out, cache, pyz, log=print):
    """Write python-ARCH/, python-ARCH.tar.gz and python-ARCH.sqfs into `out`."""
    triple = MULTIARCH.get(arch)
    if triple is None:
        raise SystemExit("runtime: unknown architecture %s (known: %s)" % (arch, " ".join(sorted(MULTIARCH))))
    debs = fetch(arch, cache, log)
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
        modules = installer_modules(pyz)
        compiled = "%d.%d" % sys.version_info[:2] == ver
        zname = "usr/lib/python%s.zip" % ver.replace(".", "")
        elves = [os.path.join(tree, "usr/bin", exe)]
        os.makedirs(os.path.join(tree, "usr/lib"), exist_ok=True)
        count = _zip_modules(modules, os.path.join(tree, zname), stdlib, exe, compiled, tree, elves)
        _copy_libraries(stage, tree, triple, elves)
    tgz = os.path.join(out, "python-%s.tar.gz" % arch)
    with tarfile.open(tgz, "w:gz", compresslevel=9) as t:
        t.add(tree, arcname=".", filter=_root_owned)
    made = [(tgz, os.path.getsize(tgz))]
    if shutil.which("mksquashfs"):
        sq = os.path.join(out, "python-%s.sqfs" % arch)
        _sh(["mksquashfs", os.path.join(tree, "usr"), sq, "-comp", "xz", "-noappend", "-all-root", "-quiet",
             "-no-progress"], stdout=subprocess.DEVNULL)
        made.append((sq, os.path.getsize(sq)))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(tree) for f in fs
                if not os.path.islink(os.path.join(dp, f)))
    log("%s/: Python %s for %s, %d modules (%s), %d KiB unpacked (the interpreter %d KiB, glibc included)"
        % (tree, ver, arch, count, ".pyc" if compiled else "sources: this Python is not %s" % ver, total // 1024,
           os.path.getsize(os.path.join(tree, "usr/bin", exe)) // 1024))
    for path, size in made:
        log("%s: %d KiB" % (path, size // 1024))
    return tree


def _zip_modules(modules, zpath, stdlib, exe, compiled, tree, elves):
    """The standard modules into the zip (.pyc when this Python is the board's version);
    extension modules into lib-dynload (added to elves). Returns how many went into the zip."""
    dynload = os.path.join(stdlib, "lib-dynload")
    count = 0
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in modules:
            rel = name.replace(".", "/")
            for cand in (rel + "/__init__.py", rel + ".py"):
                src = os.path.join(stdlib, cand)
                if os.path.isfile(src):
                    with open(src, "rb") as f:
                        data = f.read()
                    if compiled:
                        from .bundle import _pyc

                        z.writestr(_info(cand + "c"), _pyc(data, "/usr/lib/%s/%s" % (exe, cand)))
                    else:
                        z.writestr(_info(cand), data)
                    count += 1
                    break
            else:
                for so in os.listdir(dynload) if os.path.isdir(dynload) else ():
                    if so.startswith(name + ".cpython-"):
                        dst = os.path.join(tree, "usr/lib", exe, "lib-dynload", so)
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        shutil.copy2(os.path.join(dynload, so), dst)
                        elves.append(dst)
    return count


def _copy_libraries(stage, tree, triple, elves):
    """The shared libraries the ELF files need (NEEDED, transitively), and the ELF interpreter."""
    libdirs = ["lib/" + triple, "usr/lib/" + triple, "lib", "usr/lib"]
    todo = list(elves)
    seen = set()
    interp = _interp(elves[0])
    if interp:
        rel = interp.lstrip("/")
        real = os.path.realpath(os.path.join(stage, rel))
        if not real.startswith(stage):  # an absolute link inside the package tree
            real = os.path.join(stage, os.path.realpath(interp).lstrip("/"))
        dst = os.path.join(tree, "usr", rel[4:] if rel.startswith("usr/") else rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(real, dst)
    while todo:
        elf = todo.pop()
        for lib in _needed(elf):
            if lib in seen or lib.startswith("ld-linux"):
                continue
            seen.add(lib)
            for d in libdirs:
                src = os.path.join(stage, d, lib)
                if os.path.exists(src):
                    dst = os.path.join(tree, "usr/lib", triple, lib)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copy2(os.path.realpath(src), dst)
                    todo.append(dst)
                    break
            else:
                raise SystemExit("runtime: %s needs %s, not in the packages" % (elf, lib))


def _info(name):
    info = zipfile.ZipInfo(name, DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _root_owned(info):
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 1577836800
    return info
