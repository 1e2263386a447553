"""The installer process on a board: shielded from the OOM killer while it writes, modules
it rarely needs loaded on first use, and stopped cleanly by SIGTERM/SIGHUP.

Imported by otaunpack only once its arguments are good (`--help` imports nothing)."""

import sys


class OomGuard:
    """A progress subscriber that shields the installer from the OOM killer while it writes
    flash (a kill mid-write leaves a half-written partition): /proc/self/oom_score_adj goes
    to -1000 at the first erasing/updating event and back to what it was before the end
    script runs (so the end script and what it starts are not shielded), at the end, or on
    a failure. Without the privilege to lower it, nothing changes, and it is not tried
    again. Stage changes are all it reads (no byte events)."""

    PATH = "/proc/self/oom_score_adj"
    SHIELD = "-1000"
    byte_events = False

    def __init__(self):
        self.saved = None
        self.denied = False

    def __call__(self, event):
        if event.stage in ("erasing", "updating") and not event.failed and not event.final:
            self.protect()
        else:
            self.restore()

    def protect(self):
        if self.saved is not None or self.denied:
            return
        try:
            with open(self.PATH) as f:
                saved = f.read().strip()
            with open(self.PATH, "w") as f:
                f.write(self.SHIELD)
            self.saved = saved
        except OSError:
            self.denied = True

    def restore(self):
        if self.saved is None:
            return
        try:
            with open(self.PATH, "w") as f:
                f.write(self.saved)
        except OSError:
            pass
        self.saved = None


#: standard modules an install rarely or never calls but that its imports import: traceback
#: and textwrap for error messages, tempfile (with random; -t names the work directory) and
#: shutil, bz2 and lzma for archives, progress json for --progress-fd, tokenize and linecache
#: for source lines; subprocess (with its threading, selectors and locale) runs only scripts.
#: Loaded on first use.
LAZY = ("tempfile", "random", "bz2", "lzma", "json", "subprocess", "shutil", "traceback", "textwrap", "tokenize",
        "linecache")


def lazy_modules(names=LAZY):
    """Put a stand-in for each module in sys.modules that imports the real one the first
    time one of its attributes is used. (importlib.util.LazyLoader does not do: every
    `import x` of a module already imported looks at x.__spec__, which loads it.)"""
    import types

    class Deferred(types.ModuleType):
        def __getattr__(self, attr):  # only for attributes not already here
            import importlib

            name = self.__name__
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = importlib.import_module(name)
            self.__dict__.update(real.__dict__)
            return getattr(real, attr)

    for name in names:
        if name not in sys.modules:
            sys.modules[name] = Deferred(name)


def stop_on_signals():
    """SIGTERM and SIGHUP (a supervisor stopping us, a closed session) stop the update the
    way a failure does: temp files removed, the end script run with OTA_STATUS=-1, exit 1."""
    import signal

    from ..errors import Interrupted

    def stop(signum, frame):
        raise Interrupted("stopped by signal %d" % signum)

    saved = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            saved[sig] = signal.signal(sig, stop)
        except (ValueError, OSError):  # not the main thread (embedded use): leave them be
            pass
    return saved


def restore_signals(saved):
    import signal

    for sig, handler in saved.items():
        signal.signal(sig, handler)
