"""Installs with test code inside: a progress hook at an exact moment; the peak memory of one."""

import subprocess
import sys
import textwrap

from support.run import PROJECT


def run_hooked(pkg, root, hook_code, extra=""):
    """Install pkg under root in a child process whose progress renderer runs hook_code
    (a function body taking the event `e`) at each event: the attacker's or the power
    cut's moment, chosen exactly."""
    driver = textwrap.dedent("""
        import os, sys, signal
        from sstarota.cli import otaunpack
        from sstarota import progress
        state = {"fired": False}
        def hook(e):
        %s
        real = progress.Progress.__init__
        def init(self, renderers=None, warn=None):
            real(self, list(renderers or []) + [hook], warn)
        progress.Progress.__init__ = init
        sys.exit(otaunpack.main(sys.argv[1:]))
    """) % textwrap.indent(textwrap.dedent(hook_code), "    ")
    # -t beside the package: the journal a package without a manifest leaves there is this test's own
    return subprocess.run([sys.executable, "-c", driver, "-r", str(pkg), "--root", str(root), "-q", "-t",
                           str(pkg.parent)] + extra.split(), capture_output=True, text=True, cwd=PROJECT,
                          timeout=120)


_PEAK = """
import sys
from sstarota.cli import otaunpack
code = otaunpack.main(sys.argv[1:])
with open("/proc/self/status") as f:
    hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
sys.stderr.write("VmHWM %s\\n" % hwm)
sys.exit(code)
"""


def peak_rss_kib(argv):
    """The installer's own peak RSS (VmHWM: of this process image only, not the forked test's)."""
    proc = subprocess.run([sys.executable, "-c", _PEAK] + [str(a) for a in argv], capture_output=True, text=True,
                          cwd=PROJECT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.split("VmHWM ")[-1].split()[0])
