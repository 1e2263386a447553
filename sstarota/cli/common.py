"""What the three commands share: vendor number parsing and the one error-to-exit mapping."""

import re
import sys
import traceback

import click

from ..errors import OtaError

#: the click settings every command shares
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the update failed after writing began; 2 usage or bad input; "
    "3 the package was rejected and nothing was written."
)


class PrefixCommand(click.Command):
    """Long options read as getopt_long reads them: ``--opt=VALUE`` (click's own) and any
    unique prefix of a long option for it (``--block-up``); an ambiguous prefix is a usage
    error naming the candidates. A prefix unique among ``preferred`` (the vendor's long
    options) means that option even when one of ours shares it, so a vendor command line
    means what it meant."""

    def __init__(self, *args, preferred=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.preferred = tuple(preferred)

    def parse_args(self, ctx, args):
        takes_value, numbers = {}, set()
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    takes_value[opt] = not param.is_flag and not param.count
                    if isinstance(param.type, VendorInt):
                        numbers.add(opt)
        args = expand_prefixes(args, takes_value, self.preferred, ctx)
        args, notes = swallowed_values(args, takes_value, numbers)
        for note in notes:
            click.echo("%s: warning: %s" % (ctx.info_name or "otapack", note), err=True)
        return super().parse_args(ctx, args)


#: what a number option holds when getopt gave it the next option as its value (see swallowed_values)
SWALLOWED = "\0swallowed:"
#: the value the vendor stores for a number it cannot read
VENDOR_INVALID_NUMBER = 0xFFFFFFFF


def swallowed_values(args, takes_value, numbers):
    """The vendor's getopt on a number option whose value is missing (`-t -m 0 --file-update`, an
    empty <part>_patsize in ota.mk): the next word, an option taking a value, is the number's
    value (invalid: the vendor stores 0xffffffff), and the word after it, then a stray operand,
    is dropped. Returns the args to parse and a warning per case."""
    out, notes = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        out.append(arg)
        i += 1
        if arg == "--":
            out.extend(args[i:])
            break
        if arg in numbers and i + 1 < len(args) and takes_value.get(args[i]):
            word, stray = args[i], args[i + 1]
            out.append(SWALLOWED + word)
            i += 1
            note = "%s has no value: as the vendor's getopt does, %r is read as its value (not a number: " \
                   "stored 0x%x)" % (arg, word, VENDOR_INVALID_NUMBER)
            if not stray.startswith("-"):
                note += " and %r after it is dropped" % stray
                i += 1
            notes.append(note + "; give %s a number" % arg)
        elif arg in takes_value and takes_value[arg] and i < len(args):
            out.append(args[i])  # a value: never an option
            i += 1
    return out, notes


def expand_prefixes(args, takes_value, preferred=(), ctx=None):
    """args with every abbreviated long option written out. takes_value: option -> whether
    it takes a value; a value (the word after such an option) is never expanded."""
    out = []
    words = iter(args)
    for arg in words:
        if arg == "--":  # the end of the options
            out.append(arg)
            out.extend(words)
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg.startswith("--") and name not in takes_value:
            name = _resolve_prefix(name, takes_value, preferred, ctx)
            arg = name + eq + value
        out.append(arg)
        if takes_value.get(name) and not eq:  # its value: the next word, whatever it looks like
            value = next(words, None)
            if value is not None:
                out.append(value)
    return out


def _resolve_prefix(name, options, preferred, ctx):
    for pool in (preferred, options):
        found = sorted(o for o in pool if o.startswith("--") and o.startswith(name))
        if len(found) == 1:
            return found[0]
    found = sorted(o for o in options if o.startswith("--") and o.startswith(name))
    if len(found) > 1:
        raise click.UsageError("option %s is ambiguous; possibilities: %s" % (name, ", ".join(found)), ctx)
    return name  # unknown: click says so


def script_options(f):
    """-b and -e: the begin and end scripts a package is created with."""
    f = click.option("-e", "--end-script", "end", metavar="FILE", help="End script (with -c).")(f)
    return click.option("-b", "--begin-script", "begin", metavar="FILE", help="Begin script (with -c).")(f)


def target_options(src_help, dst_metavar, dst_help, size_bits):
    """-s, -d and -t: a record's (or legacy slot's) data, target and target size."""

    def deco(f):
        f = click.option("-t", "--dst-file-size", "size", type=VendorInt(size_bits), default=0, metavar="SIZE",
                         help="Target size (hex with 0x).")(f)
        f = click.option("-d", "--dst-file", "dst", metavar=dst_metavar, help=dst_help)(f)
        return click.option("-s", "--src-file", "src", metavar="FILE", help=src_help)(f)

    return deco


#: --debug, as every command takes it
debug_option = click.option("--debug", is_flag=True, help="Tracebacks and details.")


#: a number as the vendor reads one: 0x (or 0X) and hex digits, or decimal digits, ASCII only
_VENDOR_NUMBER = re.compile(r"\A(?:0[xX]([0-9a-fA-F]+)|[0-9]+)\Z")


class VendorInt(click.ParamType):
    """A number as the vendor tools read it: hex only with 0x, decimal otherwise."""

    name = "NUMBER"

    def __init__(self, bits=32, warn_leading_zero=False):
        self.bits = bits
        self.warn_leading_zero = warn_leading_zero

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if value.startswith(SWALLOWED):
            return VENDOR_INVALID_NUMBER
        text = value
        m = _VENDOR_NUMBER.match(text)
        if not m:  # the vendor's grammar only: no sign, space, underscore, other digits or prefixes
            self.fail("%r is not a number (decimal digits, or 0x and hex digits)" % value, param, ctx)
        number = int(m.group(1), 16) if m.group(1) is not None else int(text, 10)
        if number >= 1 << self.bits:
            self.fail("%s does not fit %d bits" % (value, self.bits), param, ctx)
        if self.warn_leading_zero and len(text) > 1 and text[0] == "0" and text[:2].lower() != "0x":
            hint = ""
            try:
                hint = "; for octal %s write %s 0x%x" % (text, param.opts[0] if param else "-m", int(text, 8))
            except ValueError:
                pass
            click.echo(
                "%s: warning: %s %s is read as decimal %d (mode 0o%o), as the vendor tool reads it%s"
                % (ctx.info_name if ctx else "otapack", param.opts[0] if param else "-m", text, number, number, hint),
                err=True,
            )
        return number


def run(command, argv, prog, force_code=None):
    """Run a click command; map our errors to one line on stderr and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        sys.stderr.write("%s: %s (see %s --help)\n" % (prog, exc.format_message(), prog))
        return 2
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("%s: interrupted\n" % prog)
        return 130
    except OtaError as exc:
        if debug:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return force_code if force_code is not None else exc.exit_code
    return rv if isinstance(rv, int) else 0
