"""Progress as a stream of events that renderers consume.

The installer emits an Event for every stage change and as bytes pass; any number of
renderers (text on stderr now; JSON lines and the framebuffer later) subscribe.
"""

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import List

STAGES = ("start", "verify", "begin-script", "update", "end-script", "done")


@dataclass
class Event:
    stage: str  # one of STAGES
    failed: bool = False
    record: int = 0  # 1-based index of the record being handled (0: none)
    records: int = 0  # how many records the package has
    target: str = ""
    label: str = ""
    done: int = 0  # bytes done in this stage
    total: int = 0  # bytes this stage will handle
    message: str = ""

    def as_dict(self):
        return asdict(self)


class Progress:
    """Fans events out to renderers; remembers the last one."""

    def __init__(self, renderers=None):
        self.renderers: List = list(renderers or [])
        self.last = Event("start")

    def emit(self, stage, **fields):
        event = Event(stage, **fields)
        self.last = event
        for r in self.renderers:
            r(event)
        return event

    def bytes(self, done, **fields):
        """A byte-count update within the current stage."""
        last = self.last
        event = Event(last.stage, last.failed, fields.get("record", last.record), last.records,
                      fields.get("target", last.target), fields.get("label", last.label), done,
                      fields.get("total", last.total))
        self.last = event
        for r in self.renderers:
            r(event)


@dataclass
class TextRenderer:
    """A bar on a TTY (redrawn at most 10 times a second), plain lines otherwise."""

    stream: object = field(default_factory=lambda: sys.stderr)
    width: int = 30
    prog: str = "otaunpack"

    def __post_init__(self):
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_draw = 0.0
        self._last_key = None

    def __call__(self, e):
        key = (e.stage, e.record, e.failed, e.message)
        if self.tty:
            now = time.monotonic()
            if key == self._last_key and now - self._last_draw < 0.1 and e.done < e.total:
                return
            self._last_draw = now
            frac = e.done / e.total if e.total else (1.0 if e.done else 0.0)
            filled = int(frac * self.width)
            what = self._describe(e)
            self.stream.write("\r\x1b[K[%s%s] %3d%% %s" % ("#" * filled, "-" * (self.width - filled), frac * 100, what))
            if e.stage == "done" or e.failed:
                self.stream.write("\n")
            self.stream.flush()
            self._last_key = key
            return
        if key == self._last_key:
            return  # plain lines: one per stage/record, not per chunk
        self._last_key = key
        self.stream.write("%s: %s\n" % (self.prog, self._describe(e)))
        self.stream.flush()

    @staticmethod
    def _describe(e):
        text = e.stage + (" FAILED" if e.failed else "")
        if e.record:
            text += " %d/%d" % (e.record, e.records)
        if e.target:
            text += " %s" % e.target
        if e.label:
            text += " (%s)" % e.label
        if e.total and not e.record and e.stage in ("verify", "update", "done"):
            text += " %d bytes" % e.total
        if e.message:
            text += ": " + e.message
        return text
