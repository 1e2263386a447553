"""The board's policy, in one place: the board config file, overridden by the command line.

/etc/sstarota/board.conf (under --root: ROOT/etc/sstarota/board.conf, and the paths it
names are taken inside the root too), `name = value` lines, `#` comments:

    require_signature = yes            # refuse unsigned packages (also implied by any key)
    keys_dir = /etc/sstarota/keys      # public keys, *.pem / *.pub (the default)
    compatible = ssd202-cam1           # this board's name, matched against the package's list
    version_file = /etc/sstarota/version   # the installed version (the default), or
    version_env = sstarota_version     # a u-boot variable, through fw_printenv / fw_setenv
    fw_printenv = /usr/sbin/fw_printenv    # the u-boot tools (default: on PATH; under --root:
    fw_setenv = /usr/sbin/fw_setenv        #   only these, inside the root; never the host's)
    version_store_optional = yes       # install versioned packages when the store does not work
    state_dir = /data/sstarota         # the journal and stashes that make re-runs safe (persistent!)

Refusals are PackageErrors (exit 3) raised in the verify pass, before any script runs, each
with a fixed reason word (.reason, REASON_*). The version store (a file, or a u-boot
variable) is read and checked writable there too: a board that records versions and whose
store does not work refuses a versioned package before anything is written, unless
version_store_optional. The new version is recorded (record_version) only after the end
script reports success. Every file the policy reads (the config, keys, the version file) is a
regular file of a bounded size reached through the confined walk (confine.Root): under
--root nothing outside the root is read, written or run.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time

from .. import manifest
from ..confine import AtomicAt, Root, StaleCleaner, TargetProblem
from ..errors import PackageError, UsageError
from ..fsutil import read_small
from ..recordclass import TYPE_CHECKING, dataclass, field

if TYPE_CHECKING:
    from typing import List, Optional, Tuple

CONFIG = "/etc/sstarota/board.conf"
KEYS_DIR = "/etc/sstarota/keys"
VERSION_FILE = "/etc/sstarota/version"
SETTINGS = ("require_signature", "keys_dir", "compatible", "version_file", "version_env", "fw_printenv",
            "fw_setenv", "version_store_optional", "state_dir")
#: the largest board config read, and the largest version file (a version is at most 64 characters)
CONFIG_LIMIT = 64 << 10
VERSION_LIMIT = 4096
#: seconds a u-boot tool may take
TOOL_TIMEOUT = 60
YES, NO = ("yes", "1", "true"), ("no", "0", "false")

#: why a package was refused (PolicyRefusal.reason)
REASON_NO_KEYS = "no-keys"
REASON_UNSIGNED = "unsigned"
REASON_UNKNOWN_KEY = "unknown-key"
REASON_BAD_SIGNATURE = "bad-signature"
REASON_INCOMPATIBLE = "incompatible"
REASON_DOWNGRADE = "downgrade"
REASON_VERSION_STORE = "version-store"


class PolicyRefusal(PackageError):
    """The board's policy refuses the package (exit 3, nothing written); reason: REASON_*."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class StoreError(Exception):
    """The version store does not work (message: why)."""


def version_key(text):
    """A version as a sortable key: numbers compare as numbers, letters as text, `~` sorts
    before anything (1.0~rc1 < 1.0 < 1.0a < 1.0.1); . + - _ only separate. Numbers compare
    by their digits (no int(): any length)."""
    key = []
    for tok in re.findall(r"\d+|[A-Za-z]+|~", text):
        if tok.isdigit():
            digits = tok.lstrip("0")
            key.append((3, len(digits), digits))
        else:
            key.append((0, 0, "") if tok == "~" else (2, 0, tok))
    return key + [(1, 0, "")]


def valid_version(text, where):
    """text, when it is a version a manifest can carry (manifest.check_fields); StoreError if not."""
    try:
        manifest.check_fields((), text)
    except PackageError:
        shown = text if len(text) <= 40 else "%s... (%d characters)" % (text[:40], len(text))
        raise StoreError("%s does not hold a version (1 to 64 letters, digits and ._+~-): %r"
                         % (where, shown)) from None
    return text


def parse_config(data, path):
    """{setting: value} of a board config file's bytes."""
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise UsageError("the board config %s is not UTF-8 text" % path) from None
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


def read_config(root, config):
    """The board config: --config FILE (a host path that must exist), else the board's (or the
    root's) /etc/sstarota/board.conf through the confined walk (None when absent). A regular
    file of at most CONFIG_LIMIT bytes; anything else is a UsageError (exit 2)."""
    path = config or root.resolve_path(CONFIG)
    try:
        data = read_small(config, CONFIG_LIMIT) if config else root.read(CONFIG, CONFIG_LIMIT)
    except FileNotFoundError:
        raise UsageError("--config %s does not exist" % config) from None
    except OSError as exc:
        raise UsageError("cannot read the board config %s: %s" % (path, exc.strerror or exc)) from None
    except TargetProblem as exc:
        raise UsageError("cannot read the board config: %s" % exc) from None
    return None if data is None else parse_config(data, path)


def _flag(conf, name, path):
    value = conf.get(name, "no").lower()
    if value not in YES + NO:
        raise UsageError("%s: %s = %s: yes or no" % (path, name, value))
    return value in YES


def _inside(root, p):
    """A path the board config names, taken inside the root: '..' cannot climb out of it, nor
    can a symlink inside it lead out."""
    path = os.path.join(root, os.path.normpath("/" + p).lstrip("/"))
    real, top = os.path.realpath(path), os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip("/") + "/"):
        raise UsageError("the board config's %s leads outside the root %s (to %s); refused" % (p, root, real))
    return path


def _key_files(fsroot, kdir):
    """The key files (*.pem, *.pub) in the keys directory kdir, walked from the root; None when it
    is absent or empty. Any entry at all makes signatures required: a key under a wrong name
    refuses every package (unknown key), never opens the board."""
    try:
        names = fsroot.listdir(kdir)
    except (OSError, TargetProblem) as exc:
        raise UsageError("cannot read the keys directory %s: %s" % (fsroot.resolve_path(kdir), exc)) from None
    if not names:
        return None
    return [kdir.rstrip("/") + "/" + n for n in sorted(names) if n.endswith((".pem", ".pub"))]


def _exists(fsroot, target):
    """Whether something is at target (followed, confined); True when the walk fails: what is
    there is then checked, and refused, with the store in Policy.check."""
    try:
        loc = fsroot.locate(target, follow_final=True, missing_ok=True)
    except (OSError, TargetProblem):
        return True
    if loc is None:
        return False
    with loc:
        return loc.lstat() is not None


# ---------------------------------------------------------------------------- the version store


class FileStore:
    """The version in a file (one line), reached through the confined walk and replaced with
    confine.AtomicAt (temp file beside it, fsync, rename, fsync of the directory)."""

    def __init__(self, root, target):
        self.root, self.target = root, target
        self.where = "the version file %s" % root.resolve_path(target)

    def close(self):
        pass

    def read(self):
        try:
            data = self.root.read(self.target, VERSION_LIMIT)
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (self.where, exc.strerror or exc)) from None
        except TargetProblem as exc:
            raise StoreError(str(exc)) from None
        if data is None:
            return None
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise StoreError("%s is not ASCII text" % self.where) from None
        return valid_version(text, self.where) if text else None

    def _locate(self):
        try:
            loc = self.root.locate(self.target, follow_final=True, missing_ok=True)
        except (OSError, TargetProblem) as exc:
            raise StoreError("cannot reach %s: %s" % (self.where, exc)) from None
        if loc is None:
            raise StoreError("cannot write %s: its directory does not exist" % self.where)
        return loc

    def probe(self):
        """StoreError unless the file's directory can be written (a read-only filesystem cannot)."""
        with self._locate() as loc:
            if not os.access(".", os.W_OK, dir_fd=loc.dirfd):
                raise StoreError("cannot write %s: %s is read-only or not writable" % (self.where, loc.where))

    def write(self, version):
        with self._locate() as loc:
            out = None
            try:
                out = AtomicAt(loc, cleaner=StaleCleaner())
                out.write((version + "\n").encode())
                out.commit()
            except OSError as exc:
                if out is not None:
                    out.abort()
                raise StoreError("cannot write %s: %s" % (self.where, exc.strerror or exc)) from None


class EnvStore:
    """The version in a u-boot variable, through fw_printenv (all variables, so that an unset
    variable is told apart from an environment that cannot be read) and fw_setenv.

    tools: {"fw_printenv": ..., "fw_setenv": ...}, each a command on PATH (the board), a host
    path (named in the board's config), or a target inside the root (under --root: run by
    its descriptor, never by a name the host resolves); None when there is none. Inside a
    root, each tool is opened once, in the verify pass, and that file is what runs: a
    package that writes a file of the same name into the root (even with --no-scripts) does
    not get it run by us."""

    def __init__(self, var, root, tools, why_none):
        self.var, self.root, self.tools, self.why_none = var, root, tools, why_none
        self.where = "the u-boot variable %s" % var
        self.fds = {}  # tool -> O_PATH descriptor (inside a root)

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def _run(self, tool, args):
        """(exit status, stdout) of a u-boot tool; StoreError when it cannot be run."""
        cmd = self.tools.get(tool)
        if cmd is None:
            raise StoreError("%s: no %s (%s)" % (self.where, tool, self.why_none))
        try:
            pass_fds: Tuple[int, ...]
            if self.root.confined:
                fd = self._open_inside(tool, cmd)
                exe, pass_fds = "/proc/self/fd/%d" % fd, (fd,)
            else:
                exe, pass_fds = shutil.which(cmd) if "/" not in cmd else cmd, ()
                if exe is None:
                    raise StoreError("%s: %s not found" % (self.where, cmd))
            proc = subprocess.run([tool] + args, executable=exe, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=TOOL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StoreError("%s: cannot run %s: %s" % (self.where, cmd, exc)) from None
        return proc.returncode, proc.stdout

    def _open_inside(self, tool, target):
        """An O_PATH descriptor of the executable regular file target names inside the root
        (opened on first use, kept until close())."""
        if tool in self.fds:
            return self.fds[tool]
        try:
            with self.root.locate(target, follow_final=True) as loc:
                fd = os.open(loc.name, os.O_PATH | os.O_NOFOLLOW, dir_fd=loc.dirfd)
        except (OSError, TargetProblem) as exc:
            raise StoreError("%s = %s: %s" % (tool, target, exc)) from None
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) and st.st_mode & 0o111):
            os.close(fd)
            raise StoreError("%s = %s: not an executable file in the root" % (tool, target))
        self.fds[tool] = fd
        return fd

    def read(self):
        code, out = self._run("fw_printenv", [])
        if code != 0:
            raise StoreError("%s: fw_printenv failed (exit status %d)" % (self.where, code))
        prefix = (self.var + "=").encode()
        for line in out.splitlines():
            if line.startswith(prefix):
                try:
                    text = line[len(prefix):].decode("ascii").strip()
                except UnicodeDecodeError:
                    raise StoreError("%s is not ASCII text" % self.where) from None
                return valid_version(text, self.where) if text else None
        return None

    def probe(self):
        """StoreError unless fw_setenv is there to be run (fw_printenv has read the environment)."""
        cmd = self.tools.get("fw_setenv")
        if cmd is None:
            raise StoreError("%s: no fw_setenv (%s)" % (self.where, self.why_none))
        if self.root.confined:
            self._open_inside("fw_setenv", cmd)
        elif (shutil.which(cmd) if "/" not in cmd else os.access(cmd, os.X_OK)) in (None, False):
            raise StoreError("%s: %s not found" % (self.where, cmd))

    def write(self, version):
        code, _ = self._run("fw_setenv", [self.var, version])
        if code != 0:
            raise StoreError("%s: fw_setenv failed (exit status %d)" % (self.where, code))


@dataclass
class Policy:
    key_paths: List[str] = field(default_factory=list)  # host paths: --key files, --keys-dir
    require_signature: bool = False
    compatible: Optional[str] = None
    version_file: Optional[str] = VERSION_FILE  # a target, walked from root
    version_env: Optional[str] = None
    record: bool = False  # the board opted in (config or version file): record versions
    force_incompatible: bool = False
    allow_downgrade: bool = False
    state_dir: Optional[str] = None  # state.py; None: no journal, no stashes
    root: Optional[str] = None  # --root: every file and tool the policy uses is inside it
    tools: dict = field(default_factory=dict)  # u-boot tools the config names
    store_optional: bool = False  # version_store_optional / --version-store-optional
    keys_dir: Optional[str] = None  # the config's keys_dir (a target, walked from root) when it has entries
    _keys: Optional[dict] = field(default=None, repr=False)  # prepare(): loaded keys, the time it took
    _spent: float = field(default=0.0, repr=False)
    _store_ok: Optional[bool] = field(default=None, repr=False)  # check(): None when not checked
    _store: object = field(default=None, repr=False)

    @classmethod
    def load(cls, root=None, config=None, keys=(), keys_dir=None, require_signature=False,
             force_incompatible=False, allow_downgrade=False, state_dir=None, version_store_optional=False):
        fsroot = Root(root)
        conf = read_config(fsroot, config)
        has_config, conf = conf is not None, conf or {}
        path = config or fsroot.resolve_path(CONFIG)
        for k in keys:
            if not os.path.isfile(k):
                raise UsageError("--key %s: no such file" % k)
        if keys_dir and not os.path.isdir(keys_dir):
            raise UsageError("--keys-dir %s is not a directory" % keys_dir)
        key_paths, kdir = list(keys), None
        if keys_dir:
            try:
                key_paths += [keys_dir] if os.listdir(keys_dir) else []
            except OSError as exc:
                raise UsageError("--keys-dir %s: %s" % (keys_dir, exc.strerror)) from None
        else:
            kdir = conf.get("keys_dir", KEYS_DIR)
            kdir = kdir if _key_files(fsroot, kdir) is not None else None
        vfile = conf.get("version_file", VERSION_FILE)
        record = has_config or _exists(fsroot, vfile)
        tools = {t: conf[t] for t in ("fw_printenv", "fw_setenv") if conf.get(t)}
        if not root:
            tools = dict({"fw_printenv": "fw_printenv", "fw_setenv": "fw_setenv"}, **tools)
        return cls(key_paths, require_signature or _flag(conf, "require_signature", path), conf.get("compatible"),
                   vfile, conf.get("version_env"), record, force_incompatible, allow_downgrade,
                   state_dir or (_inside(root, conf["state_dir"]) if root and conf.get("state_dir")
                                 else conf.get("state_dir")),
                   root, tools, version_store_optional or _flag(conf, "version_store_optional", path), kdir)

    @property
    def has_keys(self):
        return bool(self.key_paths or self.keys_dir)

    @property
    def store(self):
        """Where this board keeps its version (a FileStore or an EnvStore), made once: the tools
        an EnvStore opens in the verify pass are the ones it runs after the update."""
        if self._store is None:
            fsroot = Root(self.root)
            if self.version_env:
                why = ("under --root the host's u-boot tools are never run: name fw_printenv and fw_setenv "
                       "inside the root in its board config" if self.root else "not configured")
                self._store = EnvStore(self.version_env, fsroot, self.tools, why)
            else:
                self._store = FileStore(fsroot, self.version_file or VERSION_FILE)
        return self._store

    # ------------------------------------------------------------------ checks
    def prepare(self):
        """Import the signature code and load the keys, once: at the start of the verify pass,
        while the installer's own files are still in the page cache (after 64 MiB of package
        on a 64 MB board they are not). Returns ({key id: key}, seconds the first call took)."""
        if self._keys is None and self.has_keys:
            started = time.perf_counter()
            from .. import signing

            self._keys = signing.load_keys(self.key_paths)
            fsroot = Root(self.root)
            for target in _key_files(fsroot, self.keys_dir) or () if self.keys_dir else ():
                where = fsroot.resolve_path(target)
                try:
                    data = fsroot.read(target, signing.KEY_LIMIT)
                except OSError as exc:
                    raise UsageError("cannot read the public key %s: %s" % (where, exc.strerror or exc)) from None
                except TargetProblem as exc:
                    raise UsageError("cannot read the public key %s: %s" % (where, exc)) from None
                if data is None:
                    raise UsageError("cannot read the public key %s: it is gone" % where)
                vk = signing.public_from_pem(data, where)
                self._keys[signing.key_id(vk)] = vk
            self._spent = time.perf_counter() - started
        return self._keys or {}, self._spent

    def check(self, m, note):
        """Refuse (PolicyRefusal) what this board must not install; m: the manifest or None."""
        self._check_signature(m, note)
        if m is None:
            return
        self._check_compatible(m, note)
        self._check_version(m, note)

    def _check_signature(self, m, note):
        sig = m.signature if m is not None else None
        if not self.has_keys:
            if self.require_signature:
                raise PolicyRefusal(REASON_NO_KEYS, "signatures are required but this board has no public keys (%s)"
                                    % KEYS_DIR)
            if sig is not None:
                note("package signed by key %s; not checked (no keys on this board)" % sig.key_id)
            return
        if sig is None:
            raise PolicyRefusal(REASON_UNSIGNED, "unsigned package: this board accepts only signed packages"
                                + ("" if m is not None else " (it has no sstarota manifest)"))
        started = time.perf_counter()
        keys, spent = self.prepare()
        from .. import signing

        vk = keys.get(sig.key_id)
        if vk is None:
            raise PolicyRefusal(REASON_UNKNOWN_KEY, "unknown key: the package is signed by key %s, which this board "
                                "does not have (it has %s)" % (sig.key_id, ", ".join(sorted(keys)) or "none"))
        if not signing.verify(vk, sig, m.body_sha256):
            raise PolicyRefusal(REASON_BAD_SIGNATURE, "bad signature: the package's %s signature does not verify "
                                "with key %s" % (sig.alg, sig.key_id))
        note("signature checked: %s key %s (%.0f ms)" % (sig.alg, sig.key_id,
                                                          1000 * (spent + time.perf_counter() - started)))

    def _check_compatible(self, m, note):
        if not m.compatible or self.compatible is None or self.compatible in m.compatible:
            return
        if self.force_incompatible:
            note("package for %s installed on %s (--force-incompatible)" % (" ".join(m.compatible), self.compatible))
            return
        raise PolicyRefusal(REASON_INCOMPATIBLE, "incompatible package: made for %s, this board is %s (give "
                            "--force-incompatible to install it anyway)" % (" ".join(m.compatible), self.compatible))

    def _check_version(self, m, note):
        """The store read and checked writable before anything is written: a versioned package
        on a board whose store does not work is refused (unless store_optional)."""
        if m.version is None or not self.record:
            return
        store = self.store
        try:
            current = store.read()
            store.probe()
        except StoreError as exc:
            self._store_ok = False
            store.close()
            if self.store_optional:
                note("version %s not checked against the board's and not recorded: %s (version_store_optional)"
                     % (m.version, exc))
                return
            raise PolicyRefusal(REASON_VERSION_STORE, "version store does not work: %s; a versioned package is "
                                "refused (version_store_optional = yes in the board config, or "
                                "--version-store-optional, installs it unrecorded)" % exc) from None
        self._store_ok = True
        if current is None or version_key(m.version) >= version_key(current):
            return
        if self.allow_downgrade:
            note("downgrade from %s to %s (--allow-downgrade)" % (current, m.version))
            return
        raise PolicyRefusal(REASON_DOWNGRADE, "downgrade refused: the package is version %s, this board has %s "
                            "(give --allow-downgrade to install it anyway)" % (m.version, current))

    # ------------------------------------------------------------------ the version store
    def current_version(self):
        """The board's version, or None (none recorded); StoreError when the store does not work."""
        return self.store.read()

    def record_version(self, version, note, warn=None):
        """Store the installed version (after the end script reported success). A failure here
        comes after the update: a warning, not an error (the store was checked in verify)."""
        if version is None or not self.record or self._store_ok is False:
            return
        try:
            self.store.write(version)
        except StoreError as exc:
            (warn or note)("version %s not recorded: %s" % (version, exc))
            return
        finally:
            self.store.close()
        note("version %s recorded" % version)
