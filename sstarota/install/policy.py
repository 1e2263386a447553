"""The board's policy, in one place: the board config file, overridden by the command line.

/etc/sstarota/board.conf (under --root: ROOT/etc/sstarota/board.conf, and the paths it
names are taken inside the root too), `name = value` lines, `#` comments:

    require_signature = yes            # refuse unsigned packages (also implied by any key)
    keys_dir = /etc/sstarota/keys      # public keys, *.pem / *.pub (the default)
    compatible = ssd202-cam1           # this board's name, matched against the package's list
    version_file = /etc/sstarota/version   # the installed version (the default), or
    version_env = sstarota_version     # a u-boot variable, through fw_printenv / fw_setenv
    state_dir = /data/sstarota         # the journal and stashes that make re-runs safe (persistent!)

Refusals are PackageErrors (exit 3) raised in the verify pass, before any script runs.
The new version is recorded (record_version) only after the end script reports success.
"""

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import PackageError, UsageError

CONFIG = "/etc/sstarota/board.conf"
KEYS_DIR = "/etc/sstarota/keys"
VERSION_FILE = "/etc/sstarota/version"
SETTINGS = ("require_signature", "keys_dir", "compatible", "version_file", "version_env", "state_dir")


def version_key(text):
    """A version as a sortable key: numbers compare as numbers, letters as text, `~` sorts
    before anything (1.0~rc1 < 1.0 < 1.0a < 1.0.1); . + - _ only separate."""
    key = []
    for tok in re.findall(r"\d+|[A-Za-z]+|~", text):
        key.append((3, int(tok)) if tok.isdigit() else (0, "") if tok == "~" else (2, tok))
    return key + [(1, "")]


def read_config(path, must_exist):
    """{setting: value} of a board config file ({} when it is absent and need not exist)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        if must_exist:
            raise UsageError("--config %s does not exist" % path) from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read the board config %s: %s" % (path, exc)) from None
    out = {}
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, eq, value = (s.strip() for s in line.partition("="))
        if not eq or name not in SETTINGS:
            raise UsageError("%s line %d: not a setting (%s)" % (path, n, ", ".join(SETTINGS)))
        out[name] = value
    return out


def _inside(root, p):
    """A path the board config names, taken inside the root: '..' cannot climb out of it, nor
    can a symlink inside it lead out."""
    path = os.path.join(root, os.path.normpath("/" + p).lstrip("/"))
    real, top = os.path.realpath(path), os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip("/") + "/"):
        raise UsageError("the board config's %s leads outside the root %s (to %s); refused" % (p, root, real))
    return path


@dataclass
class Policy:
    key_paths: List[str] = field(default_factory=list)
    require_signature: bool = False
    compatible: Optional[str] = None
    version_file: Optional[str] = None
    version_env: Optional[str] = None
    record: bool = False  # the board opted in (config or version file): record versions
    force_incompatible: bool = False
    allow_downgrade: bool = False
    state_dir: Optional[str] = None  # install/state.py; None: no journal, no stashes
    _keys: Optional[dict] = field(default=None, repr=False)  # prepare(): loaded keys, the time it took
    _spent: float = field(default=0.0, repr=False)

    @classmethod
    def load(cls, root=None, config=None, keys=(), keys_dir=None, require_signature=False,
             force_incompatible=False, allow_downgrade=False, state_dir=None):
        inside = (lambda p: _inside(root, p)) if root else (lambda p: p)
        path = config or inside(CONFIG)
        conf = read_config(path, must_exist=config is not None)
        kdir = keys_dir or inside(conf.get("keys_dir", KEYS_DIR))
        for k in keys:
            if not os.path.isfile(k):
                raise UsageError("--key %s: no such file" % k)
        key_paths = list(keys) + ([kdir] if os.path.isdir(kdir) and os.listdir(kdir) else [])
        if keys_dir and not os.path.isdir(keys_dir):
            raise UsageError("--keys-dir %s is not a directory" % keys_dir)
        flag = conf.get("require_signature", "no").lower()
        if flag not in ("yes", "no", "1", "0", "true", "false"):
            raise UsageError("%s: require_signature = %s: yes or no" % (path, flag))
        vfile = inside(conf.get("version_file", VERSION_FILE))
        return cls(key_paths, require_signature or flag in ("yes", "1", "true"), conf.get("compatible"),
                   vfile, conf.get("version_env"), bool(conf) or os.path.exists(vfile), force_incompatible,
                   allow_downgrade, state_dir or (inside(conf["state_dir"]) if conf.get("state_dir") else None))

    # ------------------------------------------------------------------ checks
    def prepare(self):
        """Import the signature code and load the keys, once: at the start of the verify pass,
        while the installer's own files are still in the page cache (after 64 MiB of package
        on a 64 MB board they are not). Returns ({key id: key}, seconds the first call took)."""
        if self._keys is None and self.key_paths:
            started = time.perf_counter()
            from .. import signing

            self._keys = signing.load_keys(self.key_paths)
            self._spent = time.perf_counter() - started
        return self._keys or {}, self._spent

    def check(self, m, note):
        """Refuse (PackageError) what this board must not install; m: the manifest or None."""
        self._check_signature(m, note)
        if m is None:
            return
        self._check_compatible(m, note)
        self._check_version(m, note)

    def _check_signature(self, m, note):
        sig = m.signature if m is not None else None
        if not self.key_paths:
            if self.require_signature:
                raise PackageError("signatures are required but this board has no public keys (%s)" % KEYS_DIR)
            if sig is not None:
                note("package signed by key %s; not checked (no keys on this board)" % sig.key_id)
            return
        if sig is None:
            raise PackageError("unsigned package: this board accepts only signed packages"
                               + ("" if m is not None else " (it has no sstarota manifest)"))
        started = time.perf_counter()
        keys, spent = self.prepare()
        from .. import signing

        vk = keys.get(sig.key_id)
        if vk is None:
            raise PackageError("unknown key: the package is signed by key %s, which this board does not have "
                               "(it has %s)" % (sig.key_id, ", ".join(sorted(keys)) or "none"))
        if not signing.verify(vk, sig, m.body_sha256):
            raise PackageError("bad signature: the package's %s signature does not verify with key %s"
                               % (sig.alg, sig.key_id))
        note("signature checked: %s key %s (%.0f ms)" % (sig.alg, sig.key_id,
                                                          1000 * (spent + time.perf_counter() - started)))

    def _check_compatible(self, m, note):
        if not m.compatible or self.compatible is None or self.compatible in m.compatible:
            return
        if self.force_incompatible:
            note("package for %s installed on %s (--force-incompatible)" % (" ".join(m.compatible), self.compatible))
            return
        raise PackageError("incompatible package: made for %s, this board is %s (give --force-incompatible to "
                           "install it anyway)" % (" ".join(m.compatible), self.compatible))

    def _check_version(self, m, note):
        current = self.current_version() if m.version is not None else None
        if current is None or version_key(m.version) >= version_key(current):
            return
        if self.allow_downgrade:
            note("downgrade from %s to %s (--allow-downgrade)" % (current, m.version))
            return
        raise PackageError("downgrade refused: the package is version %s, this board has %s (give "
                           "--allow-downgrade to install it anyway)" % (m.version, current))

    # ------------------------------------------------------------------ the version store
    def current_version(self):
        if self.version_env:
            try:
                out = subprocess.run(["fw_printenv", "-n", self.version_env], capture_output=True, text=True)
            except OSError:
                return None
            return out.stdout.strip() or None if out.returncode == 0 else None
        try:
            with open(self.version_file) as f:
                return f.read().strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def record_version(self, version, note):
        """Store the installed version (after the end script reported success)."""
        if version is None or not self.record:
            return
        try:
            if self.version_env:
                subprocess.run(["fw_setenv", self.version_env, version], check=True, capture_output=True)
            else:
                tmp = self.version_file + ".new"
                with open(tmp, "w") as f:
                    f.write(version + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.version_file)
        except (OSError, subprocess.CalledProcessError) as exc:
            note("could not record version %s: %s" % (version, exc))
            return
        note("version %s recorded" % version)
