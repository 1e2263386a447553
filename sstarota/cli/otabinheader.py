"""otabinheader: writes the legacy single header (2584 bytes); data is appended with cat."""

import sys

import click

from ..errors import UsageError
from .common import CONTEXT_SETTINGS, EXIT_CODES_HELP, debug_option, run, script_options, target_options

HELP = """Write the legacy single-header package header (32 slots, 2584 bytes).

\b
  otabinheader -c PKG [-b BEGIN.sh] [-e END.sh]; cat BEGIN.sh END.sh >> PKG
  otabinheader -a PKG -s IMAGE -d DEV -t SIZE -p OP; cat IMAGE >> PKG

OP: 0 raw (or "raw"), 1 UBI volume ("ubi"), 2 file ("file"). Only the header is written:
append the scripts and each slot's data with cat, in that order.

""" + EXIT_CODES_HELP



@click.command(help=HELP, context_settings=CONTEXT_SETTINGS)
@click.option("-c", "create", metavar="PKG", help="Create the header.")
@click.option("-a", "append", metavar="PKG", help="Fill the next slot of PKG's header.")
@script_options
@target_options("The slot's data (with -a).", "DEV", "The slot's target (at most 63 bytes).", 32)
@click.option("-p", "op", metavar="OP", help="0 raw, 1 ubi, 2 file.")
@debug_option
def cli(create, append, begin, end, src, dst, size, op, debug):
    from .. import packer, schema

    if bool(create) == bool(append):
        raise UsageError("give exactly one of -c PKG, -a PKG")
    if create:
        packer.legacy_create(create, begin, end)
        return 0
    missing = [flag for flag, value in (("-s", src), ("-d", dst), ("-p", op)) if value is None]
    if missing:
        raise UsageError("-a needs %s" % " ".join(missing))
    names = {name: code for code, name in schema.LEGACY_OP_NAMES.items()}
    code = names.get(op.lower()) if not op.isdigit() else int(op)
    if code is None:
        raise UsageError("-p %r: use 0 (raw), 1 (ubi) or 2 (file)" % op)
    packer.legacy_append(append, src, dst, size, code)
    return 0


def main(argv=None):
    return run(cli, argv, "otabinheader", force_code=2)


if __name__ == "__main__":
    sys.exit(main())
