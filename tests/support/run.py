"""Running the tools: in-process (Cli, the `cli` fixture) or in a subprocess; the goldens replayed."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from sstarota.cli import otabinheader as otabinheader_cli
from sstarota.cli import otapack as otapack_cli

PROJECT = Path(__file__).resolve().parent.parent.parent
GOLDEN = PROJECT / "tests" / "golden"
VENDOR_TOOL_ID = "3b93edbf0108ecfedd9ac74cc583df842370830b"
#: the venv's bin: its console scripts (otapack, otaunpack) as a user runs them
BIN = Path(sys.executable).parent


def _tool(name, argv, console, text, check, stdin, timeout, kw):
    cmd = [str(BIN / name)] if console else [sys.executable, "-m", "sstarota.cli." + name]
    kw.setdefault("cwd", PROJECT)
    proc = subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=text, input=stdin,
                          timeout=timeout, **kw)
    if check:
        assert proc.returncode == 0, (argv, proc.stderr)
    return proc


def otapack(*argv, check=True, console=False, text=True, stdin=None, timeout=300, **kw):
    """otapack in a subprocess (python -m, or the console script); asserts exit 0 unless check=False."""
    return _tool("otapack", argv, console, text, check, stdin, timeout, kw)


def otaunpack(*argv, check=False, console=False, text=True, stdin=None, timeout=120, **kw):
    """otaunpack in a subprocess, from the project directory; text output unless text=False.
    Extra keywords (env, pass_fds, cwd) go to subprocess.run."""
    return _tool("otaunpack", argv, console, text, check, stdin, timeout, kw)


def otaunpack_events(events, *argv, **kw):
    """otaunpack(*argv, **kw) with its JSON progress events written to the file events (through
    --progress-fd); returns (the process, the events)."""
    from .results import events_of

    with open(events, "w") as f:
        proc = otaunpack(*argv, "--progress-fd", f.fileno(), pass_fds=(f.fileno(),), **kw)
    return proc, events_of(events)


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


class Cli:
    """Runs a command's main(argv) in-process and captures its output."""

    def __init__(self, capfd):
        self.capfd = capfd

    def __call__(self, main, *argv, cwd=None):
        old = os.getcwd()
        if cwd:
            os.chdir(cwd)
        try:
            code = main([str(a) for a in argv])
        finally:
            os.chdir(old)
        out, err = self.capfd.readouterr()
        return code, out, err

    def otapack(self, *argv, cwd=None):
        return self(otapack_cli.main, *argv, cwd=cwd)

    def otabinheader(self, *argv, cwd=None):
        return self(otabinheader_cli.main, *argv, cwd=cwd)

    def pack(self, *argv, cwd=None):
        """otapack that must succeed; its standard output."""
        code, out, err = self.otapack(*argv, cwd=cwd)
        assert code == 0, (argv, err)
        return out


def copy_inputs(version, dest):
    """Copy a golden's in/ tree, modes as the vendor saw them (0755 executables, 0644 the rest)."""
    shutil.copytree(GOLDEN / version / "in", dest)
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for name in files:
            p = os.path.join(root, name)
            os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    return dest


def golden_commands(version):
    """The otapack command lines of a golden's COMMANDS.txt, as argv lists."""
    out = []
    for line in (GOLDEN / version / "COMMANDS.txt").read_text().splitlines():
        if line.startswith("otapack "):
            out.append(shlex.split(line)[1:])
    return out


def replay(cli, version, workdir, create_extra=(), extra_commands=()):
    """Replay a golden's COMMANDS.txt with our otapack; packages land in workdir."""
    inp = copy_inputs(version, workdir / "in")
    for argv in golden_commands(version) + list(extra_commands):
        if "-c" in argv:
            argv = argv + list(create_extra)
        code, out, err = cli.otapack(*argv, cwd=inp)
        assert code == 0, (argv, err)
    return workdir


def create(cli, pkg, fmt="0.4", *extra):
    """otapack -c of a package of generation fmt with the records' test tool id (records.TOOL_ID)."""
    from support.records import TOOL_ID

    code, out, err = cli.otapack("-c", pkg, "--format", fmt, "--tool-id", TOOL_ID.decode(), *extra)
    assert code == 0, err
