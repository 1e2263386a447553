"""The board path on the host: what otaunpack imports, and the bundle (a zipapp) that
carries it to a board, with otaunpack's exit codes."""

import os
import subprocess
import sys
import zipfile

from support import GOLDEN

from sstarota import bundle

PROBE = """
import sys
from sstarota.cli import otaunpack
code = otaunpack.main(sys.argv[1:])
real = [n for n, m in sys.modules.items() if type(m).__name__ != "Deferred"]
sys.stderr.write("MODULES " + " ".join(sorted(n for n in real if n.split(".")[0] in
                                              ("sstarota", "click", "construct", "PIL", "bz2", "json", "subprocess",
                                               "traceback", "textwrap"))) + "\\n")
sys.exit(code)
"""


def imported(*argv):
    p = subprocess.run([sys.executable, "-c", PROBE] + [str(a) for a in argv], capture_output=True, text=True)
    assert "MODULES " in p.stderr, p.stderr
    return p.returncode, p.stderr.rsplit("MODULES ", 1)[1].split()


def test_help_imports_nothing_and_an_install_only_what_it_uses(tmp_path):
    code, mods = imported("--help")
    # the defaults the options show (sstarota.defaults imports nothing itself)
    assert code == 0 and mods == ["sstarota", "sstarota.cli", "sstarota.cli.otaunpack", "sstarota.defaults"]
    # a package without a delta, no --progress-fd, no -p: no click, Pillow, bz2 or json
    root = tmp_path / "root"
    root.mkdir()
    code, mods = imported("-r", GOLDEN / "v0.4/p2.bin", "--root", root, "-q")
    assert code == 0
    # the layouts are parsed through the compiled table: construct stays on the host
    assert "construct" not in mods and "sstarota.layouts" not in mods and "sstarota.install" in mods
    assert not [m for m in mods if m.split(".")[0] in ("click", "PIL", "bz2", "json")], mods
    # nor what only scripts (subprocess) and error messages (traceback, textwrap) need
    code, mods = imported("-r", GOLDEN / "v0.4/p2.bin", "--root", root, "-q", "--no-scripts")
    assert code == 0 and not [m for m in mods if m in ("subprocess", "traceback", "textwrap")], mods
    assert "sstarota.pack" not in mods and "sstarota.cli.common" not in mods


def test_the_bundle_is_one_reproducible_executable_with_otaunpacks_exit_codes(tmp_path):
    pyz = tmp_path / "otaunpack"
    size = bundle.zipapp(str(pyz))
    assert pyz.stat().st_size == size and pyz.stat().st_mode & 0o111
    again = tmp_path / "again"
    bundle.zipapp(str(again))
    assert pyz.read_bytes() == again.read_bytes()
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names and "sstarota/cli/otaunpack.pyc" in names
    assert not [n for n in names if n.startswith(("click/", "construct/", "sstarota/layouts.", "sstarota/pack.",
                                                  "sstarota/cli/otapack"))]
    sourceless = tmp_path / "sourceless"
    bundle.zipapp(str(sourceless), sources=False)
    assert not [n for n in zipfile.ZipFile(sourceless).namelist() if n.endswith(".py") and n != "__main__.py"]
    root = tmp_path / "root"
    root.mkdir()

    def run(*argv):
        return subprocess.run([sys.executable, "-S", str(pyz)] + [str(a) for a in argv], capture_output=True, text=True)

    assert run("--help").returncode == 0
    assert run("--no-such-flag").returncode == 2
    bad = tmp_path / "bad.bin"
    data = bytearray((GOLDEN / "v0.4/p2.bin").read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    r = run("-r", bad, "--root", root)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    r = run("-r", GOLDEN / "v0.4/p2.bin", "--root", root, "-q")
    assert r.returncode == 0, r.stderr


def test_the_hand_parsed_command_line_reads_what_click_read():
    from sstarota.cli.otaunpack import _Usage, parse_args

    o = parse_args(["-xPKG.gz", "-t", "/tmp", "--fb=/dev/fb1", "--fb-mode", "640x480-16", "-q", "--progress-fd", "3"])
    assert (o["gz_path"], o["tmpdir"], o["fb_device"], o["fb_mode"], o["quiet"], o["progress_fd"]) == \
        ("PKG.gz", "/tmp", "/dev/fb1", "640x480-16", True, 3)
    o = parse_args(["-qr", "-", "-t", "a", "-t", "b", "--dry-run", "--all-targets", "--no-scripts", "--debug"])
    assert (o["raw_path"], o["tmpdir"], o["quiet"], o["dry_run"], o["all_targets"], o["no_scripts"], o["debug"]) == \
        ("-", "b", True, True, True, True, True)
    o = parse_args(["-x", "p.gz"])
    assert (o["fb_device"], o["fb_mode"], o["picture"], o["root"], o["progress_fd"]) == \
        ("/dev/fb0", "1280x720-32", None, None, None)
    assert parse_args(["-x", "a", "b", "--progress-fd", "x", "-h"])["help"]  # as click: --help before those checks
    for argv, message in ((["--bogus"], "No such option: --bogus"), (["-h", "--bogus"], "No such option: --bogus"), (["-x"], "Option '-x' requires an argument."),
                          (["-x", "a", "b"], "Got unexpected extra argument (b)"),
                          (["-x", "a", "--", "-q"], "Got unexpected extra argument (-q)"),
                          (["--quiet=1"], "Option '--quiet' does not take a value."),
                          (["--progress-fd", "x"], "Invalid value for '--progress-fd': 'x' is not a valid integer.")):
        try:
            parse_args(argv)
        except _Usage as exc:
            assert str(exc) == message
        else:
            raise AssertionError(argv)


def other_pythons():
    """Interpreters on this machine of another minor version than this one (pyenv's too)."""
    import glob
    import shutil

    found = {}
    for cand in [shutil.which("python%s" % v) for v in ("2", "2.7", "3.9", "3.10", "3.12", "3.13")] + \
            sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python"))):
        if cand and os.path.exists(cand):
            p = subprocess.run([cand, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                               text=True)
            if p.returncode == 0 and p.stdout.strip() != "%d.%d" % sys.version_info[:2]:
                found.setdefault(p.stdout.strip(), cand)
    return found


def test_version_and_a_sourceless_bundle_on_another_python_says_so_in_one_line(tmp_path):
    from sstarota import __version__

    pyz = tmp_path / "otaunpack"
    bundle.zipapp(str(pyz), sources=False)
    r = subprocess.run([sys.executable, str(pyz), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("otaunpack (sstarota) %s, Python 3." % __version__), r
    # the check, as any other Python sees it: a __main__ built for another minor version
    other = tmp_path / "other"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("__main__.py", bundle.main_source(True, (3, 99)))
    r = subprocess.run([sys.executable, str(other), "-x", "p.bin.gz"], capture_output=True, text=True)
    assert r.returncode == bundle.WRONG_PYTHON == 4
    assert r.stderr.splitlines() == ["otaunpack: this bundle needs Python 3.99, not %d.%d (its bytecode is for that "
                                      "version only: build it without --sourceless)" % sys.version_info[:2]]
    # and the real thing, with every other Python this machine has (Python 2 included)
    full = tmp_path / "full"
    bundle.zipapp(str(full))
    for version, python in other_pythons().items():
        r = subprocess.run([python, str(pyz), "--version"], capture_output=True, text=True)
        assert r.returncode == 4 and len(r.stderr.splitlines()) == 1 and "not %s" % version in r.stderr, (python, r)
        r = subprocess.run([python, str(full), "--version"], capture_output=True, text=True)
        if tuple(map(int, version.split("."))) >= (3, 9):
            assert r.returncode == 0 and "Python %s." % version in r.stdout, (python, r)
        else:
            assert r.returncode == 4 and r.stderr.splitlines() == [
                "otaunpack: this bundle needs Python 3.9 or later, not %s (board-bundle --runtime ARCH carries "
                "one)" % version], (python, r)


def test_every_module_any_path_imports_is_in_the_runtimes_set(tmp_path):
    """The probe (sstarota.runtime.CASES: file, stdin, http, https with --ca, every record
    kind, deltas, Ed25519 and P-256 signatures, the board's policy, the screen on jpg and
    png, a failed and a rejected install, dry run) run with this Python through the bundle:
    a module imported on any path and missing from runtime.MODULES (SCREEN_MODULES for the
    screen) would be missing on a board that runs from the runtime alone."""
    from sstarota import runtime

    if sys.version_info[:2] != runtime.PYTHON:
        import pytest

        pytest.skip("the runtime's set is Python %d.%d's" % runtime.PYTHON)
    pyz = tmp_path / "otaunpack"
    bundle.zipapp(str(pyz))
    mods, codes = runtime.derive(str(pyz), work=str(tmp_path / "probe"))
    assert codes == runtime.EXPECTED
    for name, _, _, screen in runtime.case_runs({"http": "", "https": ""}):
        err = (tmp_path / "probe" / "out" / (name + ".err")).read_text()
        assert "Traceback" not in err and "No module named" not in err, (name, err)
        if screen:
            assert "no framebuffer progress" not in err, (name, err)
        allowed = set(runtime.STARTUP + runtime.MODULES + (runtime.SCREEN_MODULES if screen else []))
        new = sorted(set(runtime.standard(mods[name])) - allowed)
        assert not new, "case %s imports %s, outside the runtime's set (add to sstarota/runtime.py %s)" % (
            name, " ".join(new), "SCREEN_MODULES" if screen else "MODULES")


def test_the_amd64_runtime_runs_every_path_alone_in_a_root_without_merged_usr(tmp_path):
    """The runtime for amd64 (this machine's architecture: it runs here) unpacked into an
    empty root (no /lib link: its loader must be at /lib64, where the interpreter's header
    says), every case run chrooted there from the runtime alone: no module or library missing."""
    import shutil
    import tarfile

    import pytest

    from sstarota import runtime

    if os.geteuid() != 0 or not shutil.which("apt-get") or sys.version_info[:2] != runtime.PYTHON:
        pytest.skip("needs root (chroot), apt and Python %d.%d" % runtime.PYTHON)
    cache = os.path.join(os.path.expanduser("~"), ".cache", "sstarota-runtime")
    runtime.build("amd64", str(tmp_path), cache, log=lambda msg: None)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(tmp_path / "python-amd64.tar.gz") as t:
        names = t.getnames()
        assert not [n for n in names if t.getmember(n).isdir()]  # a merged root's /lib link would be replaced
        t.extractall(root)
    assert sorted(os.listdir(root)) == ["lib64", "usr"] and (root / "lib64/ld-linux-x86-64.so.2").is_file()
    busybox = shutil.which("busybox")
    if not busybox or "statically linked" not in subprocess.run(["file", busybox], capture_output=True,
                                                                 text=True).stdout:
        pytest.skip("needs a static busybox: the board's sh for the package's scripts")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin/sh")
    pyz = root / "otaunpack"
    bundle.zipapp(str(pyz), interpreter="/usr/bin/python3")
    probe = runtime.make_probe(str(root / "probe"))
    served = runtime.Served(probe)
    try:
        codes = {}
        for name, argv, stdin, screen in runtime.case_runs(served.urls()):
            if "--root" in argv:
                r = root / "probe" / argv[argv.index("--root") + 1]
                if not r.exists():
                    shutil.copytree(root / "probe/template", r)
                    if str(r).endswith("keyed"):
                        shutil.copytree(root / "probe/template-keyed", r, dirs_exist_ok=True)
            (root / "probe/tmp").mkdir(exist_ok=True)
            p = subprocess.run(["/otaunpack"] + argv, capture_output=True, text=True,
                               stdin=open(root / "probe" / stdin, "rb") if stdin else subprocess.DEVNULL,
                               preexec_fn=lambda: (os.chroot(str(root)), os.chdir("/probe")))
            codes[name] = p.returncode
            assert "Traceback" not in p.stderr and "No module named" not in p.stderr, (name, p.stderr)
            if screen:
                assert "no framebuffer progress" not in p.stderr, (name, p.stderr)
    finally:
        served.stop()
    assert codes == runtime.EXPECTED
