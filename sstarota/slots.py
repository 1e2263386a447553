"""A/B slots on the board (docs/AB.md): the slot table, SigmaStar's u-boot env protocol, the
status that `otaunpack --status` shows.

The slot table is /etc/sstarota/slots.conf, `name = value` lines, `#` comments:

    slot A = /dev/mtd4                 # the slot's targets, in slot_select order (A is 0)
    slot B = /dev/mtd5                 # (more per slot where a layout has them: /dev/mtd4 /dev/ubi0_1)
    booted = slot_select               # how the booted slot is known, or: cmdline KEY (KEY=A)
    fw_printenv = fw_printenv          # the env tools (libubootenv's or u-boot-tools')
    fw_setenv = fw_setenv
    env_config = /etc/fw_env.config    # passed as -c; both env copies listed there
    env_script = name=value            # fw_setenv -s lines: libubootenv's; u-boot-tools': name value
    tries = 3                          # boots a new slot gets before u-boot falls back

The env protocol of SigmaStar's A/B SDK: `slot_select` is the slot u-boot's `bootab` boots (0
or 1), `slot_number` how many there are, `slot_metadata` one byte per slot, comma-separated
("0x8f,0x3f"): bit 7 (0x80) the slot booted successfully, bits 4-6 the tries remaining, bits
0-3 its priority (our reading of Android's boot-control byte; SigmaStar's IPL is a binary).

No slot table: nothing here is used, and the board installs as a single-copy board.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

from .errors import InstallError, PackageError, UsageError
from .recordclass import TYPE_CHECKING, dataclass

if TYPE_CHECKING:
    from typing import Dict, List, Optional

CONFIG = "/etc/sstarota/slots.conf"
STATUS = "slots.json"  # in the state directory
SETTINGS = ("booted", "fw_printenv", "fw_setenv", "env_config", "env_script", "tries")

SUCCESS = 0x80
MAX_PRIORITY = 15
MAX_TRIES = 7


# ---------------------------------------------------------------------------- slot_metadata bytes


def tries_of(byte):
    return (byte >> 4) & MAX_TRIES


def priority_of(byte):
    return byte & MAX_PRIORITY


def successful(byte):
    return bool(byte & SUCCESS)


def make_byte(priority, tries, success):
    if not 0 <= priority <= MAX_PRIORITY or not 0 <= tries <= MAX_TRIES:
        raise ValueError("priority 0-15 and tries 0-7, not %r and %r" % (priority, tries))
    return (SUCCESS if success else 0) | tries << 4 | priority


def bootable(byte):
    """What u-boot's bootab boots: a priority, and a successful boot or tries left."""
    return priority_of(byte) > 0 and (successful(byte) or tries_of(byte) > 0)


def state_of(byte):
    """good (booted successfully), trial (tries left, not yet marked good), failed (out of tries,
    never marked good: abandoned by u-boot), empty (no priority: never installed)."""
    if priority_of(byte) == 0:
        return "empty"
    if successful(byte):
        return "good"
    return "trial" if tries_of(byte) else "failed"


def parse_metadata(text, count):
    """slot_metadata ("0x8f,0x3f") as `count` bytes; a missing byte is 0. ValueError when it is
    not a list of bytes."""
    text = (text or "").strip()
    parts = [p.strip() for p in text.split(",")] if text else []
    if len(parts) > count:
        raise ValueError("slot_metadata %r has %d bytes for %d slots" % (text, len(parts), count))
    out = []
    for p in parts:
        if not re.fullmatch(r"0[xX][0-9a-fA-F]{1,2}|[0-9]{1,3}", p) or int(p, 0) > 255:
            raise ValueError("slot_metadata %r: %r is not a byte (0x00-0xff)" % (text, p))
        out.append(int(p, 0))
    return out + [0] * (count - len(out))


def format_metadata(meta):
    return ",".join("0x%02x" % b for b in meta)


def switched(meta, target, tries):
    """The metadata that puts `target` on trial: the highest priority, `tries` tries, not
    successful; a slot that had the highest priority steps down one (it stays bootable: the
    fallback)."""
    out = list(meta)
    for i, b in enumerate(out):
        if i != target and priority_of(b) >= MAX_PRIORITY:
            out[i] = b - 1
    out[target] = make_byte(MAX_PRIORITY, tries, False)
    return out


def marked_good(meta, slot):
    out = list(meta)
    out[slot] |= SUCCESS
    return out


# ---------------------------------------------------------------------------- the slot table


@dataclass
class SlotTable:
    names: List[str]
    targets: Dict[str, List[str]]
    booted: str = "slot_select"  # or "cmdline KEY"
    fw_printenv: str = "fw_printenv"
    fw_setenv: str = "fw_setenv"
    env_config: Optional[str] = None
    env_script: str = "name=value"
    tries: int = 3
    path: str = CONFIG

    def slot_of(self, target):
        """(slot index, position in the slot's targets) of a target, or None."""
        for i, name in enumerate(self.names):
            if target in self.targets[name]:
                return i, self.targets[name].index(target)
        return None


def parse_table(text, path=CONFIG):
    """The slot table from a slots.conf's text; UsageError naming the line when it is wrong."""
    names, targets, conf = [], {}, {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, eq, value = (s.strip() for s in line.partition("="))
        m = re.fullmatch(r"slot\s+([A-Za-z0-9_]+)", key)
        if not eq:
            raise UsageError("%s line %d: not a setting (slot NAME = TARGETS, %s)" % (path, n, ", ".join(SETTINGS)))
        if m:
            name = m.group(1)
            if name in targets:
                raise UsageError("%s line %d: slot %s is named twice" % (path, n, name))
            devs = value.split()
            if not devs or any(not d.startswith("/") for d in devs):
                raise UsageError("%s line %d: slot %s needs absolute target paths, not %r" % (path, n, name, value))
            for d in devs:
                for other, theirs in targets.items():
                    if d in theirs:
                        raise UsageError("%s line %d: %s is slot %s's already" % (path, n, d, other))
            names.append(name)
            targets[name] = devs
        elif key in SETTINGS:
            conf[key] = value
        else:
            raise UsageError("%s line %d: not a setting (slot NAME = TARGETS, %s)" % (path, n, ", ".join(SETTINGS)))
    if len(names) != 2:
        raise UsageError("%s: an A/B table names two slots (slot A = ..., slot B = ...), not %d" % (path, len(names)))
    if len({len(t) for t in targets.values()}) != 1:
        raise UsageError("%s: every slot needs as many targets as the others (one per partition)" % path)
    table = SlotTable(names, targets, path=path)
    booted = conf.get("booted", "slot_select")
    if booted != "slot_select" and not re.fullmatch(r"cmdline\s+\S+", booted):
        raise UsageError("%s: booted = %s: slot_select or cmdline KEY" % (path, booted))
    table.booted = re.sub(r"\s+", " ", booted)
    try:
        table.tries = int(conf.get("tries", "3"), 10)
        if not 1 <= table.tries <= MAX_TRIES:
            raise ValueError
    except ValueError:
        raise UsageError("%s: tries = %s: a number from 1 to %d" % (path, conf.get("tries"), MAX_TRIES)) from None
    script = conf.get("env_script", "name=value")
    if script not in ("name=value", "name value"):
        raise UsageError("%s: env_script = %s: name=value (libubootenv) or name value (u-boot-tools)" % (path, script))
    table.env_script = script
    table.fw_printenv = conf.get("fw_printenv", "fw_printenv")
    table.fw_setenv = conf.get("fw_setenv", "fw_setenv")
    table.env_config = conf.get("env_config")
    return table


def load_table(path=None):
    """The board's slot table, or None when the board has none (a single-copy board)."""
    path = path or CONFIG
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read the slot table %s: %s" % (path, exc)) from None
    return parse_table(text, path)


# ---------------------------------------------------------------------------- the env


class Env:
    """u-boot's environment through the board's fw_printenv / fw_setenv."""

    def __init__(self, table):
        self.table = table

    def _cmd(self, tool):
        return [tool] + (["-c", self.table.env_config] if self.table.env_config else [])

    def get(self, *names):
        try:
            p = subprocess.run(self._cmd(self.table.fw_printenv) + list(names), capture_output=True, text=True)
        except OSError as exc:
            raise UsageError("cannot run %s: %s" % (self.table.fw_printenv, exc.strerror)) from None
        out = {}
        for line in p.stdout.splitlines():
            name, eq, value = line.partition("=")
            if eq:
                out[name] = value
        if p.returncode and not out:
            raise UsageError("%s %s failed: %s" % (self.table.fw_printenv, " ".join(names),
                                                   (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]))
        return out

    def set(self, values):
        """Every variable in one env write (fw_setenv -s: one erase and write of the other env
        copy), then read back: a tool that ignored a line is an error, not a silent success."""
        sep = "=" if self.table.env_script == "name=value" else " "
        fd, script = tempfile.mkstemp(prefix="sstarota-env-", suffix=".txt")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join("%s%s%s\n" % (k, sep, v) for k, v in values.items()))
            try:
                p = subprocess.run(self._cmd(self.table.fw_setenv) + ["-s", script], capture_output=True, text=True)
            except OSError as exc:
                raise InstallError("cannot run %s: %s" % (self.table.fw_setenv, exc.strerror)) from None
        finally:
            os.unlink(script)
        if p.returncode:
            raise InstallError("%s -s failed (exit %d): %s" % (self.table.fw_setenv, p.returncode,
                                                               (p.stderr.strip().splitlines() or [""])[-1]))
        got = self.get(*values)
        for k, v in values.items():
            if got.get(k) != v:
                raise InstallError("%s did not set %s=%s (the env holds %r; env_script = %s in %s?)"
                                   % (self.table.fw_setenv, k, v, got.get(k), self.table.env_script, self.table.path))


# ---------------------------------------------------------------------------- the board's slots


@dataclass
class Expect:
    target: str
    size: int
    sha256: Optional[str]  # None: a delta without a manifest (no result hash to read back against)


class Slots:
    """The slots of a running board: which one booted, where an install goes, the switch."""

    def __init__(self, table, state_dir=None, note=None, env=None, cmdline="/proc/cmdline"):
        self.table = table
        self.env = env or Env(table)
        self.state_dir = state_dir
        self.note = note or (lambda msg: None)
        self.cmdline = cmdline
        self._booted = None
        self.expect: Dict[str, Expect] = {}

    # ------------------------------------------------------------------ where we are
    def booted(self):
        """The index of the slot running now."""
        if self._booted is None:
            t = self.table
            switched_from = self._switched_this_boot()
            if switched_from is not None:
                # slot_select names the next boot's slot once an install switched it
                self._booted = switched_from
            elif t.booted == "slot_select":
                value = self.env.get("slot_select").get("slot_select")
                if value is None or not value.isdigit() or int(value) >= len(t.names):
                    raise UsageError("the env's slot_select is %r: cannot tell the booted slot (0 to %d)"
                                     % (value, len(t.names) - 1))
                self._booted = int(value)
            else:
                key = t.booted.split(" ", 1)[1]
                try:
                    with open(self.cmdline) as f:
                        words = f.read().split()
                except OSError as exc:
                    raise UsageError("cannot read %s: %s" % (self.cmdline, exc.strerror)) from None
                value = next((w.split("=", 1)[1] for w in words if w.startswith(key + "=")), None)
                if value not in t.names:
                    raise UsageError("the kernel command line's %s is %r, not a slot of %s (%s)"
                                     % (key, value, t.path, ", ".join(t.names)))
                self._booted = t.names.index(value)
        return self._booted

    def _switched_this_boot(self):
        """The running slot an install of this boot switched away from (slots.json, by the
        kernel's boot id), or None."""
        saved = self.load_status()
        boot = _boot_id()
        if boot and saved.get("switch_boot_id") == boot and saved.get("switched_from") in self.table.names:
            return self.table.names.index(saved["switched_from"])
        return None

    def target_slot(self):
        return 1 - self.booted()

    def metadata(self):
        env = self.env.get("slot_select", "slot_number", "slot_metadata")
        try:
            return env, parse_metadata(env.get("slot_metadata"), len(self.table.names))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ the install's hooks
    def select(self, rec_index, op_name, pairs, all_targets):
        """[(target, selected)] for a record's [(target, mask)]: a record naming both slots'
        targets (1.6, `-d "/dev/mtd4 /dev/mtd5"`) writes the inactive slot's, whatever its
        masks; a record naming one slot's target (0.3/0.4) writes the inactive slot's
        counterpart. Other targets keep their masks. The running slot is never selected."""
        t = self.table
        slots = {t.slot_of(name)[0] for name, _ in pairs if t.slot_of(name)}
        out = []
        for name, mask in pairs:
            where = t.slot_of(name)
            if where is None:
                self._not_running(rec_index, op_name, name)
                out.append((name, bool(mask) or all_targets))
            elif len(slots) > 1:
                out.append((name, where[0] == self.target_slot()))
            else:
                out.append((t.targets[t.names[self.target_slot()]][where[1]], True))
        return out

    def _not_running(self, rec_index, op_name, name):
        """A target outside the table that is the running slot's partition under another name
        (/dev/mtdblock4 for /dev/mtd4) is refused."""
        m = re.fullmatch(r"/dev/mtd(?:block)?(\d+)(?:ro)?", name)
        if not m:
            return
        running = self.table.targets[self.table.names[self.booted()]]
        for dev in running:
            d = re.fullmatch(r"/dev/mtd(?:block)?(\d+)(?:ro)?", dev)
            if d and d.group(1) == m.group(1):
                raise PackageError("record %d (%s %s): that is slot %s's partition (%s), the running slot: refused, "
                                   "nothing written" % (rec_index + 1, op_name, name,
                                                        self.table.names[self.booted()], dev))

    def fallback_at_risk(self, refused=False):
        """Why an install into the inactive slot must wait, or None. It overwrites what u-boot
        falls back to: while the running slot is not marked good (on trial, or on its last try)
        and the other one is bootable, that is the only copy known good. Not after a switch
        in this boot: the other slot is then the one just written, not booted yet. refused:
        said of an install refused for it (nothing written)."""
        if self._switched_this_boot() is not None:
            return None
        running, target = self.booted(), self.target_slot()
        _, meta = self.metadata()
        if successful(meta[running]) or not bootable(meta[target]):
            return None
        names = self.table.names
        return ("slot %s is running on trial (not marked good) and slot %s is what the board falls back to: "
                "installing into %s would overwrite it; %smark %s good first (otaunpack --mark-good, once it is "
                "healthy)" % (names[running], names[target], names[target], "nothing written: " if refused else "",
                              names[running]))

    def keep_fallback(self):
        """Refuse (nothing written) an install that fallback_at_risk says must wait."""
        why = self.fallback_at_risk(refused=True)
        if why is not None:
            raise PackageError(why, reason="slot-trial")

    def expected(self, target, size, sha256):
        """The verify pass saw what goes into a slot target: read back and compared before the switch."""
        if self.table.slot_of(target) is not None:
            self.expect[target] = Expect(target, size, sha256)

    def read_back(self, root=None):
        """Each written slot target's first `size` bytes hashed and compared with the package's."""
        import hashlib

        for e in self.expect.values():
            if e.sha256 is None:
                self.note("%s: a delta without a manifest, no result hash to read it back against" % e.target)
                continue
            path = os.path.join(root, e.target.lstrip("/")) if root else e.target
            h = hashlib.sha256()
            left = e.size
            try:
                with open(path, "rb") as f:
                    while left:
                        piece = f.read(min(left, 1 << 17))
                        if not piece:
                            break
                        h.update(piece)
                        left -= len(piece)
            except OSError as exc:
                raise InstallError("cannot read back %s: %s; the env is not switched" % (e.target, exc.strerror)) \
                    from None
            if left or h.hexdigest() != e.sha256:
                raise InstallError("%s reads back as sha256 %s, not the package's %s; the env is not switched, "
                                   "slot %s still boots" % (e.target, h.hexdigest()[:16], e.sha256[:16],
                                                           self.table.names[self.booted()]))

    def switch(self, package, version, root=None):
        """After the apply pass: the written slot read back, then one env write puts it on trial
        (slot_select and slot_metadata). Returns the slot's name, or None when the package wrote
        no slot target."""
        status = self.load_status()
        if not self.expect:
            self._record(status, "ok", "no slot target in the package: the env is unchanged", None, package, version)
            return None
        target = self.target_slot()
        name = self.table.names[target]
        self.read_back(root)
        _, meta = self.metadata()
        new = switched(meta, target, self.table.tries)
        self.env.set({"slot_select": str(target), "slot_metadata": format_metadata(new)})
        status["slots"][name] = {"version": version, "package": package, "installed": _now()}
        status["switched_to"] = name
        status["switched_from"] = self.table.names[self.booted()]
        status["switch_boot_id"] = _boot_id()
        self._record(status, "ok", "slot %s written and verified; it boots next on trial (%d tries)"
                     % (name, self.table.tries), name, package, version)
        self.note("slot %s written and verified; slot_select=%d slot_metadata=%s: it boots next, on trial"
                  % (name, target, format_metadata(new)))
        return name

    def failed(self, reason, package=None, version=None):
        """The install failed: the reason in the status, the env untouched."""
        try:
            status = self.load_status()
            target = self.table.names[self.target_slot()] if self._booted is not None else None
            if target is not None and self.expect:
                status["slots"][target] = {"version": None, "package": None, "installed": None,
                                           "note": "an install into it failed"}
            self._record(status, "failed", reason, target, package, version)
        except (OSError, UsageError):
            pass

    # ------------------------------------------------------------------ mark good, status
    def mark_good(self):
        """The booted slot's successful bit set (SigmaStar's slot_mark.sh); (slot name, changed)."""
        slot = self.booted()
        name = self.table.names[slot]
        env, meta = self.metadata()
        if successful(meta[slot]):
            return name, False
        new = marked_good(meta, slot)
        values = {"slot_metadata": format_metadata(new)}
        if env.get("slot_select") != str(slot) and self._switched_this_boot() is None:
            values["slot_select"] = str(slot)  # (after a switch in this boot, slot_select names the next boot's)
        self.env.set(values)
        status = self.load_status()
        status.setdefault("slots", {}).setdefault(name, {})["marked_good"] = _now()
        self.save_status(status)
        return name, True

    def status(self):
        """What `otaunpack --status` shows: a dict (its JSON)."""
        t = self.table
        booted = self.booted()
        env, meta = self.metadata()
        saved = self.load_status()
        out = {"booted": t.names[booted], "slot_select": env.get("slot_select"), "slot_number": env.get("slot_number"),
               "slot_metadata": env.get("slot_metadata"), "slots": {}, "last_install": saved.get("last_install"),
               "fallback": None, "install_waits": self.fallback_at_risk()}
        for i, name in enumerate(t.names):
            info = dict(saved.get("slots", {}).get(name, {}))
            out["slots"][name] = {
                "targets": t.targets[name], "state": state_of(meta[i]), "booted": i == booted,
                "priority": priority_of(meta[i]), "tries": tries_of(meta[i]), "successful": successful(meta[i]),
                "version": info.get("version"), "package": info.get("package"), "installed": info.get("installed"),
                "marked_good": info.get("marked_good")}
        for i, name in enumerate(t.names):
            if i == booted or state_of(meta[i]) != "failed":
                continue
            if saved.get("switched_to") == name or priority_of(meta[i]) > priority_of(meta[booted]):
                out["fallback"] = {"failed": name, "running": t.names[booted],
                                   "message": "fallback: slot %s failed, running %s" % (name, t.names[booted])}
        return out

    # ------------------------------------------------------------------ the status file
    def _path(self):
        return os.path.join(self.state_dir, STATUS) if self.state_dir else None

    def load_status(self):
        path = self._path()
        empty = {"slots": {}, "last_install": None, "switched_to": None}
        if path is None:
            return empty
        try:
            with open(path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) and isinstance(data.get("slots"), dict) else empty
        except FileNotFoundError:
            return empty
        except (OSError, ValueError):
            self.note("%s is unreadable: starting a new slot status" % path)
            return empty

    def save_status(self, status):
        path = self._path()
        if path is None:
            return
        from .fsutil import AtomicFile

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        with AtomicFile(path) as f:
            f.write(json.dumps(status, indent=1, sort_keys=True).encode() + b"\n")
            f.commit(mode=0o600)

    def _record(self, status, result, reason, slot, package, version):
        status["last_install"] = {"result": result, "reason": reason, "slot": slot, "package": package,
                                  "version": version, "time": _now()}
        self.save_status(status)


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_lines(st):
    """--status as text, one fact a line."""
    lines = ["booted: slot %s (slot_select=%s slot_number=%s slot_metadata=%s)"
             % (st["booted"], st["slot_select"], st["slot_number"], st["slot_metadata"])]
    for name, s in st["slots"].items():
        lines.append("slot %s: %s%s, priority %d, %d tries left; %s; version %s, package %s"
                     % (name, s["state"], " (running)" if s["booted"] else "", s["priority"], s["tries"],
                        " ".join(s["targets"]), s["version"] or "-", (s["package"] or "-")[:16]))
    last = st.get("last_install")
    if last:
        lines.append("last install: %s%s: %s" % (last["result"], " (slot %s)" % last["slot"] if last.get("slot")
                                                 else "", last["reason"]))
    if st.get("fallback"):
        lines.append(st["fallback"]["message"])
    if st.get("install_waits"):  # the boot wrapper leaves a package untried on this line
        lines.append("install waits: %s" % st["install_waits"])
    return lines

