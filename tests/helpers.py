"""Helpers shared by the host tests (imported as `helpers`)."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from sstarota.cli import otabinheader as otabinheader_cli
from sstarota.cli import otapack as otapack_cli

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
VENDOR_TOOL_ID = "3b93edbf0108ecfedd9ac74cc583df842370830b"


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


def replay(cli, version, workdir, create_extra=(), extra_commands=()):
    """Replay a golden's COMMANDS.txt with our otapack; packages land in workdir."""
    inp = copy_inputs(version, workdir / "in")
    for argv in golden_commands(version) + list(extra_commands):
        if "-c" in argv:
            argv = argv + list(create_extra)
        code, out, err = cli.otapack(*argv, cwd=inp)
        assert code == 0, (argv, err)
    return workdir


def have(tool):
    return shutil.which(tool) is not None


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, **kw)


def tree(root, files):
    """Make a tree of {relative path: bytes} under root (0644 files); return root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, 0o644)
    return root
