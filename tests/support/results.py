"""What the installer reports: its one error line, its summary line, its JSON progress events."""

import json
import re
from pathlib import Path

#: the installer's summary line: records, written, already in place; files, erase blocks, UBI volumes
SUMMARY = re.compile(r"summary: (\d+) record\(s\): (\d+) written, (\d+) already in place; written: (\d+) file\(s\), "
                     r"(\d+) flash erase block\(s\), (\d+) UBI volume\(s\)")


def _text(s):
    return s.decode(errors="replace") if isinstance(s, bytes) else s


def one_line(proc):
    """The error output is one line, no traceback; that line."""
    err = _text(proc.stderr)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("otaunpack: error") or "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def summary(err):
    """The six numbers of the summary line in err (a process's stderr, bytes or text, or the process)."""
    err = _text(getattr(err, "stderr", err))
    m = SUMMARY.search(err)
    assert m, err
    return tuple(int(x) for x in m.groups())


def events_of(path):
    """The JSON progress events written to path, one a line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def final_event(path):
    return events_of(path)[-1]
