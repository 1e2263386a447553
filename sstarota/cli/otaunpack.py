"""otaunpack: the board-side installer. Verifies the whole package before writing anything.

The board path imports as little as it can (boards have 64 MB of RAM and a slow CPU): the
command line is parsed by hand here instead of by click (which otapack keeps), `--help`
imports nothing, and the installer's modules are imported only once the arguments are good.
"""

import sys

from ..defaults import FB_DEVICE, FB_MODE, URL_RETRIES, URL_TIME_LIMIT, URL_TIMEOUT

PROG = "otaunpack"

HELP = """\
Usage: otaunpack [OPTIONS]

  Install a SigmaStar OTA package (legacy, 0.3, 0.4, 1.6; raw or gzip).

    otaunpack -x SStarOta.bin.gz [-t DIR] [-p upgrade.jpg]
    otaunpack -r SStarOta.bin    [-t DIR]
    otaunpack -r - -t DIR < SStarOta.bin     (stdin; spooled under DIR)
    otaunpack -x https://host/SStarOta.bin.gz [-t DIR | --no-spool]
    otaunpack --mark-good                    (A/B board: the booted slot is good)
    otaunpack --status [--json]              (A/B board: slots, last install)

  Every checksum, length and target is verified first; only then the begin
  script runs and records are written, in order. The end script runs after
  success (OTA_STATUS=0) and after a failed update (OTA_STATUS=-1). A package
  that fails verification is rejected whole: no script runs, nothing is
  written.

  Exit codes:
    0  success
    1  the update failed after writing began (or the begin script failed)
    2  usage
    3  the package was rejected and nothing was written (or a signal
       stopped the run before the begin script: nothing was written)
    4  the bundle's bytecode is for another Python (a --sourceless bundle)

"""

#: every option, once: (names, destination, metavar (None: a flag), help, default, the default
#: as --help shows it (None: the default itself; "": not shown)). The parser's tables and the
#: help's option list are made from it.
OPTIONS = [
    (("-x",), "gz_path", "PKG.gz", "A gzip-compressed package ('-' for stdin, or an http:// or https:// URL)."),
    (("-r",), "raw_path", "PKG", "A raw package ('-' for stdin, or a URL)."),
    (("-t",), "tmpdir", "DIR", "Work directory (patches, stdin and URL spool; on a tmpfs, the inflated package "
     "where it fits: one inflate instead of two). Default: $TMPDIR or /tmp."),
    (("--two-pass",), "two_pass", None,
     "Keep nothing of the package under -t: read (and inflate) it again after the verify pass."),
    (("--no-spool",), "no_spool", None,
     "URL: read the package from the server once per pass instead of downloading it under -t first."),
    (("--ca",), "ca", "FILE", "URL: trust only the CA certificates in FILE (default: the system store)."),
    (("--timeout",), "timeout", "SEC", "URL: seconds to wait for any answer.", URL_TIMEOUT),
    (("--retries",), "retries", "N",
     "URL: attempts in a row that get no byte before giving up (dropped connections resume).", URL_RETRIES),
    (("--time-limit",), "time_limit", "SEC", "URL: seconds for one read of the package (the download; with "
     "--no-spool each pass), however slowly the server answers.", URL_TIME_LIMIT),
    (("-p",), "picture", "PIC", "Show progress on the framebuffer over this picture (jpg/png)."),
    (("--fb",), "fb_device", "DEV", "Framebuffer device for -p.", FB_DEVICE),
    (("--fb-file",), "fb_file", "FILE", "Draw the screen into FILE instead of a device (previews, tests)."),
    (("--fb-mode",), "fb_mode", "WxH-LAYOUT",
     "Geometry of --fb-file: 16, 24, 32 or a layout name (rgb565, bgr565, argb8888, ...).", FB_MODE),
    (("--progress-fd",), "progress_fd", "N", "Write progress events as JSON lines to file descriptor N."),
    (("--root",), "root", "DIR", "Take every target under DIR (staging, tests); nothing outside is touched."),
    (("--allow-devices",), "allow_devices", None,
     "With --root: write device nodes found inside the root (else refused: a staging root holds image files)."),
    (("--no-scripts",), "no_scripts", None, "Do not run the begin/end scripts or script records."),
    (("--ignore-script-errors",), "ignore_script_errors", None, "Go on when the begin script or a script record "
     "fails, as the vendor's otaunpack does (the status is logged and reported at the end)."),
    (("--dry-run",), "dry_run", None, "Verify only, then print the plan (exit 0 or 3)."),
    (("--all-targets",), "all_targets", None, "1.6: write every target of a record, mask 0 ones too."),
    (("--config",), "config", "FILE", "The board config (signatures, keys, compatible name, version store).",
     None, "/etc/sstarota/board.conf; with --root, ROOT/etc/sstarota/board.conf"),
    (("--key",), "key", "PUB", "A public key (PEM) the package may be signed with; repeat for several. Any key "
     "makes signatures required.", []),
    (("--keys-dir",), "keys_dir", "DIR", "Public keys directory.", None,
     "the config's keys_dir, else /etc/sstarota/keys"),
    (("--require-signature",), "require_signature", None, "Refuse unsigned packages."),
    (("--state-dir",), "state_dir", "DIR", "Keep the journal and the stashes that let a re-run after a power cut "
     "finish the update, in DIR on persistent storage.", None, "the config's state_dir"),
    (("--force-incompatible",), "force_incompatible", None, "Install a package made for other boards."),
    (("--allow-downgrade",), "allow_downgrade", None, "Install a package older than the board's version."),
    (("--version-store-optional",), "version_store_optional", None, "Install a versioned package even when the "
     "board's version store cannot be read or written (then no downgrade check, nothing recorded)."),
    (("--mark-good",), "mark_good", None, "A/B board: set the booted slot's successful bit in slot_metadata "
     "(what the application runs once it is healthy); docs/AB.md."),
    (("--status",), "status", None,
     "A/B board: the booted slot, each slot's state, version and package, the last install, a fallback."),
    (("--json",), "json", None, "With --status: as JSON."),
    (("-q", "--quiet"), "quiet", None, "No progress output."),
    (("--debug",), "debug", None, "Tracebacks for errors."),
    (("--version",), "version", None, "Print the version and exit."),
    (("-h", "--help"), "help", None, "Show this message and exit."),
]


def _option(entry):
    names, dest, metavar, text = entry[:4]
    default = entry[4] if len(entry) > 4 else None
    shown = entry[5] if len(entry) > 5 else None
    return names, dest, metavar, text, default, shown


#: options taking a value: option -> destination
VALUE_OPTIONS = {name: o[1] for o in map(_option, OPTIONS) if o[2] for name in o[0]}
#: value options that may be repeated, each value kept (those whose default is a list)
MULTI_OPTIONS = tuple(o[1] for o in map(_option, OPTIONS) if isinstance(o[4], list))
FLAG_OPTIONS = {name: o[1] for o in map(_option, OPTIONS) if not o[2] for name in o[0]}
DEFAULTS = {o[1]: o[4] for o in map(_option, OPTIONS) if o[2] and not isinstance(o[4], list)}
NUMBERS = {"timeout": float, "retries": int, "time_limit": float}


def _wrap(text, width):
    """Words of text in lines of at most width characters (a longer word on its own line); a
    double space between two words is kept unless the line breaks there."""
    words, pending = [], ""
    for token in text.split(" "):
        if token:
            words.append(pending + token)
            pending = ""
        else:
            pending += " "
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word.lstrip(" ")
        else:
            line = line + " " + word if line else word
    return lines + [line] if line else lines


def help_text():
    """--help: the usage text above and the options, laid out as click lays them out."""
    out = [HELP.rstrip("\n") + "\n", "Options:"]
    for names, dest, metavar, text, default, shown in map(_option, OPTIONS):
        label = "  " + ", ".join(names) + (" " + metavar if metavar else "")
        if shown is None and default is not None and not isinstance(default, list):
            shown = "%g" % default if isinstance(default, float) else str(default)
        if shown:
            text += "  [default: %s]" % shown
        lines = _wrap(text, 78 - 24)
        if len(label) <= 22:
            out.append(label.ljust(24) + lines[0])
            lines = lines[1:]
        else:
            out.append(label)
        out += [" " * 24 + line for line in lines]
    return "\n".join(out) + "\n"


class _Usage(Exception):
    """A command-line mistake: one line on stderr, exit 2."""


def parse_args(argv):
    """The options as a dict, parsed as click parsed them: `-xPKG`, `-x PKG`, `--fb=DEV`,
    `--fb DEV`, grouped short flags (`-qx PKG`), the last of a repeated option wins, `--`
    ends the options; an unknown option is an error even with --help. Raises _Usage."""
    opts = {dest: DEFAULTS.get(dest) for dest in VALUE_OPTIONS.values()}
    opts.update({dest: [] for dest in MULTI_OPTIONS})
    opts.update({dest: False for dest in FLAG_OPTIONS.values()})
    args = list(argv)
    extra = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            extra += args
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in VALUE_OPTIONS:
                if not eq:
                    if not args:
                        raise _Usage("Option '%s' requires an argument." % name)
                    value = args.pop(0)
                _set(opts, VALUE_OPTIONS[name], value)
            elif name in FLAG_OPTIONS and not eq:
                opts[FLAG_OPTIONS[name]] = True
            elif name in FLAG_OPTIONS:
                raise _Usage("Option '%s' does not take a value." % name)
            else:
                raise _Usage("No such option: %s" % name)
        elif arg.startswith("-") and arg != "-":
            i = 1
            while i < len(arg):
                name = "-" + arg[i]
                i += 1
                if name in VALUE_OPTIONS:
                    if i < len(arg):
                        value = arg[i:]
                    elif args:
                        value = args.pop(0)
                    else:
                        raise _Usage("Option '%s' requires an argument." % name)
                    _set(opts, VALUE_OPTIONS[name], value)
                    break
                if name in FLAG_OPTIONS:
                    opts[FLAG_OPTIONS[name]] = True
                else:
                    raise _Usage("No such option: %s" % name)
        else:
            extra.append(arg)
    if opts["help"] or opts["version"]:  # as click: after a parse error, before extra arguments and values
        return opts
    if extra:
        raise _Usage("Got unexpected extra argument%s (%s)" % ("s" if len(extra) > 1 else "", " ".join(extra)))
    if opts["progress_fd"] is not None:
        try:
            opts["progress_fd"] = int(opts["progress_fd"].strip(), 10)
        except ValueError:
            raise _Usage("Invalid value for '--progress-fd': %r is not a valid integer." % opts["progress_fd"]) \
                from None
    _numbers(opts)
    return opts


def _numbers(opts):
    """The URL options' numbers (--timeout, --retries, --time-limit): not negative."""
    for dest, kind in NUMBERS.items():
        try:
            opts[dest] = kind(opts[dest])
            if opts[dest] < 0:
                raise ValueError
        except ValueError:
            raise _Usage("Invalid value for '--%s': %r is not a valid number." % (dest.replace("_", "-"), opts[dest])) \
                from None


def _set(opts, dest, value):
    if dest in MULTI_OPTIONS:
        opts[dest].append(value)
    else:
        opts[dest] = value


def _stderr(msg):
    """A line on stderr; a reader that went away (`| head`, a closed ssh session) never
    stops an update, and a package's text cannot send terminal escapes."""
    _write(sys.stderr, msg)


def _write(stream, msg):
    from ..text import shown

    text = shown(msg) + "\n"
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:  # a terminal that cannot show it: escaped, not lost
            stream.write(text.encode(stream.encoding or "ascii", "backslashreplace").decode(stream.encoding or "ascii"))
        stream.flush()
    except (OSError, ValueError):
        pass


def install(opts):
    """Run one install from parsed options; returns the exit code or raises OtaError."""
    import os

    from ..errors import UsageError

    if bool(opts["gz_path"]) == bool(opts["raw_path"]):
        raise UsageError("give one package: -x PKG.gz or -r PKG")
    if opts["root"] is not None and not os.path.isdir(opts["root"]):
        raise UsageError("--root %s is not a directory" % opts["root"])
    if opts["tmpdir"] is not None and not os.path.isdir(opts["tmpdir"]):
        raise UsageError("-t %s is not a directory" % opts["tmpdir"])
    import tempfile

    from .. import install, progress
    from ..confine import WorkDir

    def note(msg):
        _stderr("otaunpack: note: %s" % msg)

    def warn(msg):
        _stderr("otaunpack: warning: %s" % msg)

    work = WorkDir(opts["tmpdir"] or tempfile.gettempdir(), note)  # every work file of this run, private
    try:
        _install(opts, install, progress, work, note, warn)
    finally:
        work.close()
    return 0


def _install(opts, install, progress, work, note, warn):
    from ..errors import Interrupted, OtaError, UsageError
    from .process import OomGuard

    guard = OomGuard()
    try:
        renderers = [guard] + ([] if opts["quiet"] else [progress.TextRenderer()])
        if opts["progress_fd"] is not None:
            try:
                renderers.append(progress.JsonRenderer(opts["progress_fd"]))
            except OSError as exc:
                raise UsageError("--progress-fd %d: %s" % (opts["progress_fd"], exc.strerror)) from None
        shown = None  # the screen's renderer
        if opts["picture"] or opts["fb_file"]:
            screen = _screen(opts["picture"], opts["fb_device"], opts["fb_file"], opts["fb_mode"], warn)
            if screen is not None:
                from ..fb import FramebufferRenderer

                shown = FramebufferRenderer(screen)
                renderers.append(shown)
        path = opts["gz_path"] or opts["raw_path"]
        prog = progress.Progress(renderers, warn)
        try:
            source = install.open_source(path, gz=True if opts["gz_path"] else None, tmpdir=work.path, warn=warn,
                                         **_net_options(opts, prog))
            try:
                options = install.Options(root=opts["root"], tmpdir=work.path, work_parent=work.parent,
                                          run_scripts=not opts["no_scripts"], all_targets=opts["all_targets"],
                                          dry_run=opts["dry_run"], allow_devices=opts["allow_devices"],
                                          ignore_script_errors=opts["ignore_script_errors"],
                                          spool=not opts["two_pass"],
                                          listing=lambda line: _write(sys.stdout, line), policy=_policy(opts))
                install.Installer(source, options, prog, note).run()
            finally:
                source.close()
        except Interrupted as exc:
            _stopped_before_writing(exc, prog.last.stage)
            _show_failure(shown, prog, exc)
            raise
        except OtaError as exc:
            _show_failure(shown, prog, exc)
            raise
    finally:
        guard.restore()


def _show_failure(shown, prog, exc):
    """A failure the installer's events did not report (a download): the screen says so."""
    from .. import progress

    if shown is not None and shown.failure is None:
        try:
            shown(progress.Event(prog.last.stage, failed=True, final=True, message=str(exc)))
        except Exception:  # the screen never hides the error
            pass


def _stopped_before_writing(exc, stage):
    """A signal that stopped the run before the begin script (while downloading or verifying):
    nothing was written, and the exit code says so (3), not "failed after writing began"."""
    from ..errors import PackageError
    from ..progress import STAGE_RANK

    if STAGE_RANK.get(stage, len(STAGE_RANK)) < STAGE_RANK["begin-script"]:
        exc.exit_code = PackageError.exit_code
        exc.message = "%s before anything was written" % exc.message


def _net_options(opts, prog):
    """open_source's arguments for a URL: how hard to try, spool or not, download progress."""
    path = opts["gz_path"] or opts["raw_path"]
    if not path.startswith(("http://", "https://")):
        if opts["no_spool"] or opts["ca"]:
            from ..errors import UsageError

            raise UsageError("--no-spool and --ca go with an http:// or https:// package URL")
        return {}
    from ..netsource import Net

    def report(done, total, rate):
        of = " of %.1f MiB" % (total / 1048576.0) if total else ""
        prog.emit("downloading", message="%.1f MiB%s at %.1f MiB/s" % (done / 1048576.0, of, rate / 1048576.0),
                  part=min(1.0, done / total) if total else -1.0)

    net = Net(opts["timeout"], opts["retries"], opts["time_limit"], opts["ca"])
    return {"net": net, "spool": not opts["no_spool"], "report": report}


def _policy(opts):
    """The board's policy: its config file, overridden by the command line."""
    from ..install.policy import Policy

    return Policy.load(root=opts["root"], config=opts["config"], keys=opts["key"], keys_dir=opts["keys_dir"],
                       require_signature=opts["require_signature"], force_incompatible=opts["force_incompatible"],
                       allow_downgrade=opts["allow_downgrade"], state_dir=opts["state_dir"],
                       version_store_optional=opts["version_store_optional"])


def _slot_command(opts):
    """--mark-good, --status [--json]: the A/B slots of this board (slots.py)."""
    from .. import slots
    from ..errors import UsageError
    from ..install.pipeline import STATE_DIR

    if opts["mark_good"] == opts["status"] or (opts["json"] and not opts["status"]) or opts["gz_path"] \
            or opts["raw_path"] or opts["root"]:
        raise UsageError("--mark-good and --status [--json] go alone (no package, no --root)")
    table = slots.load_table()
    if table is None:
        raise UsageError("no slot table (%s): this board has one copy of its system, no A/B slots" % slots.CONFIG)
    board = slots.Slots(table, _policy(opts).state_dir or STATE_DIR)
    if opts["mark_good"]:
        name, changed = board.mark_good()
        _write(sys.stdout, "slot %s marked good" % name if changed else "slot %s was marked good already" % name)
        return 0
    status = board.status()
    if opts["json"]:
        import json

        sys.stdout.write(json.dumps(status, indent=1, sort_keys=True) + "\n")  # ASCII: escapes defused
    else:
        for line in slots.status_lines(status):
            _write(sys.stdout, line)
    return 0


def _screen(picture, device, fb_file, mode, warn):
    """The framebuffer screen, or None with a warning: the screen never fails an update."""
    try:
        from .. import fb

        return fb.open_screen(picture, device, fb_file, mode)
    except Exception as exc:  # no framebuffer, a broken picture, an unknown pixel layout, no Pillow
        warn("no framebuffer progress (%s: %s); text progress only" % (picture or fb_file or device, exc))
        return None


def main(argv=None):
    """The command: returns its exit code (0, 1, 2, 3; 130 when interrupted)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_args(args)
    except _Usage as exc:
        _stderr("%s: %s (see %s --help)" % (PROG, exc, PROG))
        return 2
    if opts["help"]:
        sys.stdout.write(help_text())
        sys.stdout.flush()
        return 0
    if opts["version"]:
        from .. import __version__

        sys.stdout.write("%s (sstarota) %s, Python %d.%d.%d\n" % ((PROG, __version__) + tuple(sys.version_info[:3])))
        sys.stdout.flush()
        return 0
    from .process import lazy_modules, restore_signals, stop_on_signals

    lazy_modules()
    from ..errors import OtaError

    saved = stop_on_signals()
    try:
        if opts["mark_good"] or opts["status"] or opts["json"]:  # A/B slots (slots.py)
            return _slot_command(opts)
        return install(opts)
    except KeyboardInterrupt:
        _stderr("%s: interrupted" % PROG)
        return 130
    except OtaError as exc:
        if opts["debug"]:  # the traceback, then the same line and exit code as without --debug
            import traceback

            try:
                traceback.print_exc()
            except (OSError, ValueError):  # stderr gone: the update's outcome does not depend on it
                pass
        _stderr("%s: error: %s" % (PROG, exc))
        return exc.exit_code
    finally:
        restore_signals(saved)


if __name__ == "__main__":
    sys.exit(main())
