"""Progress as a stream of events that renderers consume.

The installer tells a Progress what work lies ahead (in units: bytes verified, bytes
written, plus a fixed share per script) and what it has done; every event carries the
overall percentage, which is monotonic and reaches 100 only with the final "done" event,
after the end script. Renderers (text on stderr, JSON lines on a file descriptor, the
framebuffer screen) subscribe; a renderer that fails is dropped with a warning, never
failing the update.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .errors import Interrupted
from .recordclass import TYPE_CHECKING, asdict, dataclass, field
from .text import shown

if TYPE_CHECKING:
    from typing import List, Optional

#: stages in the order an install passes them; erasing and updating alternate per record
STAGES = ("start", "downloading", "verifying", "begin-script", "erasing", "updating", "end-script", "done")
STAGE_RANK = {"start": 0, "downloading": 0.5, "verifying": 1, "begin-script": 2, "erasing": 3, "updating": 3, "end-script": 4,
              "done": 5}
TITLES = {"start": "Start", "downloading": "Downloading", "verifying": "Verifying", "begin-script": "Begin script", "erasing": "Erasing",
          "updating": "Updating", "end-script": "End script", "done": "Done"}


@dataclass
class Event:
    stage: str  # one of STAGES
    failed: bool = False
    percent: float = 0.0  # overall, monotonic; 100 only at the final "done"
    record: int = 0  # 1-based index of the record being handled (0: none)
    records: int = 0  # how many records the package has
    target: str = ""
    label: str = ""
    done: int = 0  # units done overall
    total: int = 0  # units of the whole install (may be refined once, after the verify pass)
    message: str = ""
    final: bool = False  # the last event of the install
    summary: Optional[dict] = None  # the final event of an install: what was written and what was in place
    part: float = -1.0  # the current stage's own fraction when it has one (the download's), else -1
    code: Optional[int] = None  # the final event: otaunpack's exit code (0, 1, 3)
    reason: str = ""  # the final event: a fixed word ("ok", "dry-run", or the error's OtaError.reason)

    def as_dict(self):
        return asdict(self)

    @property
    def title(self):
        return TITLES.get(self.stage, self.stage) + (" failed" if self.failed else "")


class Progress:
    """Accounts the work and fans events out to renderers. A renderer whose `byte_events`
    is false is sent stage changes only (every event but those of `add`)."""

    def __init__(self, renderers=None, warn=None):
        self.renderers: List = list(renderers or [])
        self.warn = warn or (lambda msg: sys.stderr.write("otaunpack: warning: %s\n" % msg))
        self.total = 1
        self.done = 0
        self.percent = 0.0
        self.last = Event("start")

    # ------------------------------------------------------------------ accounting
    def set_total(self, units):
        """The units the whole install takes (may be refined; the percentage never goes back)."""
        self.total = max(int(units), self.done + 1, 1)

    def add(self, units, **context):
        """Units of work done; emits a byte-progress event in the current stage to the
        renderers that read them (none of them: only the count moves)."""
        self.done += int(units)
        if context or any(getattr(r, "byte_events", True) for r in self.renderers):
            self._send(self._event(self.last.stage, self.last.failed, context, message=self.last.message))

    def emit(self, stage, failed=False, final=False, message="", summary=None, code=None, reason="", **context):
        """A stage change (or a new record); carries the record context forward. The final
        event carries the exit code and a fixed reason word."""
        event = self._event(stage, failed, context, message=message, final=final)
        event.summary = summary
        event.code, event.reason = code, reason
        self._send(event)

    def _event(self, stage, failed, context, message="", final=False):
        last = self.last
        if final and not failed:
            pct = 100.0
        else:
            pct = min(99.9, 100.0 * self.done / self.total)
        pct = max(pct, self.percent)
        self.percent = pct
        return Event(stage, failed, round(pct, 2),
                     context.get("record", last.record), context.get("records", last.records),
                     context.get("target", last.target), context.get("label", last.label),
                     self.done, self.total, message, final, part=context.get("part", -1.0))

    def _send(self, event):
        self.last = event
        for r in list(self.renderers):
            try:
                r(event)
            except Interrupted:  # a signal that arrived while a renderer ran: it stops the update
                raise
            except Exception as exc:  # a broken screen or pipe never fails the update
                self.renderers.remove(r)
                try:
                    self.warn("progress display %s stopped: %s" % (type(r).__name__, exc))
                except Exception:  # the warning's own channel may be the broken one
                    pass


@dataclass
class TextRenderer:
    """A bar on a TTY (redrawn at most 10 times a second), plain lines otherwise."""

    stream: object = field(default_factory=lambda: sys.stderr)
    width: int = 30
    prog: str = "otaunpack"

    def __post_init__(self):
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.byte_events = self.tty  # plain lines change only with the stage or record
        self._last_draw = 0.0
        self._last_key = None

    def __call__(self, e):
        # erasing and updating alternate per erase block: one line per record for both
        key = (STAGE_RANK.get(e.stage, e.stage), e.record, e.failed, e.message)
        if self.tty:
            now = time.monotonic()
            if key == self._last_key and now - self._last_draw < 0.1 and not e.final:
                return
            self._last_draw = now
            filled = int(e.percent / 100 * self.width)
            self.stream.write("\r\x1b[K[%s%s] %5.1f%% %s" % ("#" * filled, "-" * (self.width - filled), e.percent,
                                                           self._describe(e)))
            if e.final:
                self.stream.write("\n")
            self.stream.flush()
            self._last_key = key
            return
        if key == self._last_key and not e.final:
            return  # plain lines: one per stage and record, not per block
        self._last_key = key
        self.stream.write("%s: %3d%% %s\n" % (self.prog, int(e.percent), self._describe(e)))
        self.stream.flush()

    @staticmethod
    def _describe(e):
        """The event in words; a package's names and labels with terminal escapes defused."""
        text = e.stage + (" FAILED" if e.failed else "")
        if e.record:
            text += " %d/%d" % (e.record, e.records)
        if e.target:
            text += " %s" % e.target
        if e.label:
            text += " (%s)" % e.label
        if e.message:
            text += ": " + e.message
        return shown(text)


class JsonRenderer:
    """One JSON object per event and line, on a file descriptor (--progress-fd N)."""

    def __init__(self, fd):
        self.f = os.fdopen(os.dup(fd), "w", buffering=1)

    def __call__(self, e):
        self.f.write(json.dumps(e.as_dict(), sort_keys=True) + "\n")
