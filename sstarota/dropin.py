"""Our otapack in place of the vendor's binary in an SDK tree, and back.

`otapack --install-dropin SDK` reads the vendor binary at project/image/makefiletools/bin/otapack
(its --help banner: "Ota pack internal version 1.6 commit: <id> ..."), renames it to
otapack.vendor beside itself, and puts a small sh launcher in its place that runs sstarota's
otapack with SSTAROTA_FORMAT and SSTAROTA_TOOL_ID defaulting to the vendor's version and commit,
so a plain `otapack -c` writes what the vendor's would. `--uninstall-dropin SDK` puts the
vendor's file back (checked against the SHA-256 recorded at install) and drops the launcher.
"""

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .errors import InputError
from .schema import GENERATIONS

#: where ALKAID trees keep the packer, from the SDK root or from its project/ directory
TOOL_PATHS = ("project/image/makefiletools/bin/otapack", "image/makefiletools/bin/otapack")
BACKUP_SUFFIX = ".vendor"
MARKER = "# sstarota drop-in launcher"
#: environment variables otapack reads for -c without --format / --tool-id
ENV_FORMAT = "SSTAROTA_FORMAT"
ENV_TOOL_ID = "SSTAROTA_TOOL_ID"
FORMATS = tuple(GENERATIONS)
#: set by the launcher for the otapack it runs: the drop-in's rules apply (cli/otapack.py)
ENV_DROPIN = "SSTAROTA_DROPIN"
#: the otapack the launcher runs, when set
ENV_OTAPACK = "SSTAROTA_OTAPACK"

_BANNER = re.compile(r"Ota pack internal version (\d+\.\d+)(?: commit: ([0-9A-Za-z]+))?")


def find_tool(sdk_root):
    """The packer's path in an SDK tree (the SDK root, its project/ directory, or the file itself)."""
    root = Path(sdk_root)
    if root.is_file() or root.is_symlink() and not root.is_dir():
        return root
    for rel in TOOL_PATHS:
        p = root / rel
        if p.exists() or p.is_symlink():
            return p
    raise InputError("%s: no otapack at %s" % (sdk_root, " or ".join(str(root / r) for r in TOOL_PATHS)))


def is_launcher(path):
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return MARKER.encode() in head


def vendor_banner(path):
    """(version, commit or None) from a vendor binary's --help, or None when it prints no banner."""
    try:
        proc = subprocess.run([str(path), "--help"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError("cannot run %s --help: %s" % (path, exc)) from None
    m = _BANNER.search(proc.stdout.decode("latin-1"))
    return (m.group(1), m.group(2)) if m else None


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def _our_command():
    """The otapack this installation runs (a path), or None when it runs as a module only."""
    running = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    for script in (running, Path(sys.executable).parent / "otapack"):
        if script and script.name == "otapack" and script.is_file() and not is_launcher(script):
            return str(script)
    return None


def launcher_text(fmt, tool_id, version, commit, digest, sdk_root, ours=None):
    """The sh launcher. It finds sstarota's otapack when it runs, not when it was installed (an
    SDK tree kept in git or built in a container has another venv, or none): $SSTAROTA_OTAPACK,
    else the otapack it was installed with (ours) when it is still there, else an otapack on PATH
    that says it is sstarota's (never itself), else `python3 -m sstarota.cli.otapack`; else one
    line saying what to do, exit 127. It exports SSTAROTA_DROPIN (see cli/otapack.py)."""
    lines = [
        "#!/bin/sh",
        "%s: runs sstarota's otapack in place of the vendor's" % MARKER,
        "# (internal version %s%s)." % (version or "unknown", " commit %s" % commit if commit else ""),
        "# The vendor's binary is beside this file as otapack%s (sha256 %s)." % (BACKUP_SUFFIX, digest),
        "# Undo: otapack --uninstall-dropin %s" % shlex.quote(str(sdk_root)),
        '[ -n "$%s" ] || %s=%s' % (ENV_FORMAT, ENV_FORMAT, shlex.quote(fmt)),
    ]
    if tool_id:
        lines.append('[ -n "$%s" ] || %s=%s' % (ENV_TOOL_ID, ENV_TOOL_ID, shlex.quote(tool_id)))
        lines.append("export %s %s" % (ENV_FORMAT, ENV_TOOL_ID))
    else:
        lines.append("export %s" % ENV_FORMAT)
    lines += [
        '%s=$0; export %s' % (ENV_DROPIN, ENV_DROPIN),
        "ours=%s" % shlex.quote(ours or ""),
        'if [ -n "${%s-}" ]; then exec "$%s" "$@"; fi' % (ENV_OTAPACK, ENV_OTAPACK),
        'if [ -n "$ours" ] && [ -x "$ours" ]; then exec "$ours" "$@"; fi',
        "set -f; saved_ifs=$IFS; IFS=:",
        "for d in $PATH; do",
        '    c=${d:-.}/otapack',
        '    [ -f "$c" ] && [ -x "$c" ] || continue',
        '    grep -q %s "$c" 2>/dev/null && continue' % shlex.quote(MARKER),
        '    "$c" --version 2>/dev/null </dev/null | grep -q "^otapack (sstarota)" && exec "$c" "$@"',
        "done",
        "IFS=$saved_ifs; set +f",
        'if command -v python3 >/dev/null 2>&1 && python3 -c "import sstarota.cli.otapack" 2>/dev/null; then',
        '    exec python3 -m sstarota.cli.otapack "$@"',
        "fi",
        'echo "otapack: error: sstarota\'s otapack not found (drop-in launcher $0): not at ${ours:-its install path},'
        ' not on PATH, no python3 module; pip install sstarota, or set %s=/path/to/otapack" >&2' % ENV_OTAPACK,
        "exit 127",
    ]
    return "\n".join(lines) + "\n"


def install(sdk_root, fmt=None, tool_id=None, log=print):
    """Replace the SDK's vendor otapack with a launcher for ours; returns the tool's path."""
    tool = find_tool(sdk_root)
    backup = Path(str(tool) + BACKUP_SUFFIX)
    if is_launcher(tool):
        raise InputError("%s is already sstarota's launcher (undo: otapack --uninstall-dropin %s)" % (tool, sdk_root))
    if backup.exists() or backup.is_symlink():
        raise InputError("%s exists; move it away first (it would be overwritten by the backup)" % backup)
    if tool.is_symlink() or not tool.is_file():
        raise InputError("%s is not a regular file (a symlink or a directory); nothing installed" % tool)
    banner = vendor_banner(tool)
    version, commit = banner if banner else (None, None)
    if fmt is None:
        if version is None:
            raise InputError("%s --help prints no 'Ota pack internal version X.Y' banner; give --format "
                             "(and --tool-id for 1.6) to install anyway" % tool)
        if version not in FORMATS:
            raise InputError("%s is the vendor's version %s; sstarota writes %s (give --format to choose)"
                             % (tool, version, ", ".join(FORMATS)))
        fmt = version
    if tool_id is None and fmt == "1.6":
        tool_id = commit if version == "1.6" else None
    if tool_id is not None and len(tool_id.encode()) > 63:
        raise InputError("tool id %r: at most 63 bytes" % tool_id)
    text = launcher_text(fmt, tool_id, version, commit, _sha256(tool), Path(sdk_root).resolve(), _our_command())
    tmp = tool.with_name("." + tool.name + ".sstarota.tmp")
    try:
        tmp.write_text(text)
        os.chmod(str(tmp), tool.stat().st_mode & 0o7777 | 0o555)
        os.rename(str(tool), str(backup))
        try:
            os.rename(str(tmp), str(tool))
        except OSError:
            os.rename(str(backup), str(tool))
            raise
    except OSError as exc:
        raise InputError("cannot install the launcher at %s: %s" % (tool, exc)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    log("otapack: %s now runs sstarota's otapack (-c defaults: --format %s%s); the vendor's binary is %s"
        % (tool, fmt, " --tool-id %s" % tool_id if tool_id else "", backup))
    return tool


def uninstall(sdk_root, log=print):
    """Put the vendor's otapack back, byte for byte; returns its path."""
    tool = find_tool(sdk_root)
    backup = Path(str(tool) + BACKUP_SUFFIX)
    if not is_launcher(tool):
        raise InputError("%s is not sstarota's launcher; nothing to undo" % tool)
    if not backup.is_file():
        raise InputError("%s is missing: cannot restore the vendor's otapack" % backup)
    m = re.search(r"otapack%s \(sha256 ([0-9a-f]{64})\)" % re.escape(BACKUP_SUFFIX), tool.read_text())
    if m and _sha256(backup) != m.group(1):
        raise InputError("%s changed since the launcher was installed (sha256 differs); left as it is" % backup)
    try:
        os.replace(str(backup), str(tool))
    except OSError as exc:
        raise InputError("cannot restore %s: %s" % (tool, exc)) from None
    log("otapack: %s is the vendor's binary again" % tool)
    return tool


def env_defaults(environ=None):
    """(format or None, tool id or None) that -c takes from the environment when not given."""
    env = os.environ if environ is None else environ
    fmt = env.get(ENV_FORMAT) or None
    if fmt is not None and fmt not in FORMATS:
        raise InputError("%s=%s: use one of %s" % (ENV_FORMAT, fmt, ", ".join(FORMATS)))
    return fmt, env.get(ENV_TOOL_ID) or None


def version_text():
    """What `otapack --version` prints: whose otapack this is and the -c defaults in effect."""
    from . import __version__
    from .packer import DEFAULT_TOOL_ID

    env_fmt, env_id = env_defaults()
    return "otapack (sstarota) %s\n-c format: %s\n-c tool id: %s" % (
        __version__, "%s (%s)" % (env_fmt, ENV_FORMAT) if env_fmt else "0.4 (built in)",
        "%s (%s)" % (env_id, ENV_TOOL_ID) if env_id else "%s (built in)" % DEFAULT_TOOL_ID)
