"""otapack: the host packer, with the vendor's command line (and a few additions)."""

import json
import sys

import click

from ..defaults import DEFAULT_GENERATION, GENERATION_NAMES
from ..errors import InputError, UsageError
from ..opflags import OPERATIONS
from .common import (CONTEXT_SETTINGS, EXIT_CODES_HELP, PrefixCommand, VendorInt, debug_option, expand_prefixes, run,
                     script_options, target_options)

# The library (construct, the schema) is imported when a command runs, not for --help:
# start-up time matters in make loops that call otapack once per partition.
FORMATS = GENERATION_NAMES

HELP = """Create and extend SigmaStar OTA packages, byte-compatible with the vendor's otapack.

\b
  otapack -c PKG [-b BEGIN.sh] [-e END.sh] [--format 0.3|0.4|1.6]
  otapack -a PKG -s IMAGE -d TARGET [-t SIZE] [-m MODE] --block-update|--ubi-update|--file-update
  otapack -a PKG -s FILE -d TARGET --file-add|--script-add
  otapack -a PKG -d TARGET [-s FILE] --file-delete
  otapack -a PKG -o OLD -n NEW -d TARGET [-t SIZE] --file-update-diff
  otapack -a PKG -o OLDDIR -n NEWDIR -d PREFIX --dir-update|--dir-update-diff
  otapack --out-layout FILE -r PKG       otapack --info PKG [--json]
  otapack --gzip PKG [-k]

Numbers (-t, -m) are hex with 0x and decimal otherwise, as the vendor reads them:
-m 644 stores 644 (octal 1204); write -m 0x1a4 for rw-r--r--.
1.6 only: several targets in -d ("/dev/mtd3 /dev/mtd4"), --default-mask "1 0", -l LABEL.

""" + EXIT_CODES_HELP

#: the operation flags of -a, in --help order, from the one registry (opflags.OPERATIONS)
OPERATION_HELP = tuple((name, text) for name, (_, text) in OPERATIONS.items())


#: the vendor's long options (getopt_long): a prefix unique among them means that option
VENDOR_LONG_OPTIONS = ("--create", "--append", "--src-file", "--dst-file", "--dst-file-size", "--file-mode",
                       "--diff-old", "--diff-new", "--begin-script", "--end-script", "--add-log", "--default-mask",
                       "--out-layout", "--help", "--debug") + tuple("--" + name for name, _ in OPERATION_HELP)


def operation_flags(f):
    """One --NAME flag per operation, all collected into ops."""
    for name, text in reversed(OPERATION_HELP):
        f = click.option("--" + name, "ops", flag_value=name, multiple=True, help=text)(f)
    return f


def _stacked(*options):
    """Several click options as one decorator, shown in --help in the order given."""
    def deco(f):
        for option in reversed(options):
            f = option(f)
        return f
    return deco


#: what else goes into a record: after -s/-d/-t in --help
RECORD_OPTIONS = _stacked(
    click.option("-m", "--file-mode", "mode", type=VendorInt(32, warn_leading_zero=True), default=0, metavar="MODE",
                 help="Mode stored in the record (hex with 0x, decimal otherwise)."),
    click.option("-o", "--diff-old", "old", metavar="PATH", help="Old file or tree (diffs, dir updates)."),
    click.option("-n", "--diff-new", "new", metavar="PATH", help="New file or tree (diffs, dir updates)."),
    click.option("-l", "--add-log", "label", default="", metavar="TEXT", help="1.6: record label shown on the board."),
    click.option("--default-mask", "default_mask", metavar='"1 0 .."', help="1.6: per-target write masks."),
    click.option("-p", "legacy_op", metavar="OP", help="The legacy packer's op, as older SDK ota.mk files pass it: "
                 "0 --block-update, 1 --ubi-update, 2 --file-update."),
)

#: -p of the legacy packer (otabinheader) and the operation it means here
LEGACY_OPS = {"0": "block-update", "1": "ubi-update", "2": "file-update"}


#: reading, gzip, packing choices, and the SDK drop-in: after the operations in --help
MORE_OPTIONS = _stacked(
    click.option("--out-layout", "out_layout", metavar="FILE", help="With -r: write index,src,target,0xmask lines."),
    click.option("--format", "fmt", type=click.Choice(FORMATS), help="With -c: generation (default %s)." % DEFAULT_GENERATION),
    click.option("--tool-id", "tool_id", metavar="TEXT", help="1.6: the tool id, up to 63 bytes (default: sstarota-VERSION)."),
    click.option("--info", "info", metavar="PKG", help="Describe a package (.gz too) and verify its checksums."),
    click.option("--json", "as_json", is_flag=True, help="With --info: JSON output."),
    click.option("--gzip", "gzip_path", metavar="PKG", help="Write PKG.gz reproducibly (no name, mtime 0)."),
    click.option("-k", "--keep", is_flag=True, help="With --gzip: keep PKG."),
    click.option("--skip-special", is_flag=True, help="Dir updates: skip symlinks and special files (else an error)."),
    click.option("--manifest", "with_manifest", is_flag=True,
                 help="With -c: add the sstarota manifest (record hashes, delta sources); later -a keep it updated."),
    click.option("--patch-threshold", "threshold", default="0.95", metavar="RATIO",
                 help="Pack a full update when a delta is not smaller than RATIO x NEW (default 0.95; 'off')."),
    click.option("-j", "--jobs", type=int, default=None, metavar="N",
                 help="--dir-update-diff: make patches in N processes (default: one per core)."),
    click.option("--sync", is_flag=True, help="fsync the package before renaming it into place (power-loss safe)."),
    click.option("--install-dropin", "install_dropin", metavar="SDK",
                 help="Put a launcher for this otapack in place of the SDK's vendor binary (kept as otapack.vendor); "
                      "-c then defaults to the vendor's format and tool id."),
    click.option("--uninstall-dropin", "uninstall_dropin", metavar="SDK", help="Restore the SDK's vendor otapack."),
    click.option("--version", "version", is_flag=True, help="Print the version and the -c defaults in effect."),
)

#: otapack --incremental (packer/incremental.py)
INCREMENTAL_OPTIONS = _stacked(
    click.option("--incremental", "incremental", nargs=2, metavar="OLD NEW",
                 help="With -c PKG and --config: PKG.gz holding what changed from the images in OLD to those in NEW "
                      "(a delta, the whole image, or nothing per partition); a size report (--json)."),
    click.option("--config", "config", metavar="PARTITIONS.mk",
                 help="--incremental: the ALKAID partition config (OTA_IMAGE_LIST, <part>_otablk, _patsize, "
                      "_fstype)."),
)


#: signing (docs/SIGNING.md): after the others in --help
SIGN_OPTIONS = _stacked(
    click.option("--sign", "sign_key", metavar="KEY", help="Sign a finished package, the last step: -a PKG --sign KEY "
                 "(a PEM Ed25519/P-256 private key; writes the manifest)."),
    click.option("--gen-key", "gen_key", metavar="OUT", help="Write a new private key to OUT and its public key to "
                 "OUT.pub."),
    click.option("--key-type", "key_type", type=click.Choice(("p256", "ed25519")), default="p256",
                 help="With --gen-key (default p256: the cheaper check on a board)."),
    click.option("--compatible", "compatible", metavar='"BOARD .."', help="With -c or --sign: the boards the package "
                 "is for."),
    click.option("--fw-version", "fw_version", metavar="VERSION", help="With -c or --sign: the package's version "
                 "(boards refuse older ones)."),
    click.option("--key", "keys", metavar="PUB", multiple=True, help="With --info: check the signature with this "
                 "public key (repeatable)."),
)


@click.command(cls=PrefixCommand, preferred=VENDOR_LONG_OPTIONS, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.option("-c", "--create", "create", metavar="PKG", help="Create a package (header and scripts).")
@click.option("-a", "--append", "append", metavar="PKG", help="Append a record to PKG (its own format).")
@click.option("-r", "read", metavar="PKG", help="Read PKG (with --out-layout; alone: like --info).")
@script_options
@target_options("Source image or file.", "TARGET", "Target path or device (1.6: several, space separated).", 64)
@RECORD_OPTIONS
@operation_flags
@MORE_OPTIONS
@INCREMENTAL_OPTIONS
@SIGN_OPTIONS
@debug_option
def cli(create, append, read, begin, end, src, dst, size, mode, old, new, label, default_mask, legacy_op, ops,
        out_layout, fmt, tool_id, info, as_json, gzip_path, keep, skip_special, with_manifest, threshold, jobs, sync,
        install_dropin, uninstall_dropin, version, incremental, config, debug, **signing):
    from .. import dropin, info as pkginfo, packer, package

    if legacy_op is not None:
        if legacy_op not in LEGACY_OPS:
            raise UsageError("-p %r: the legacy op is 0 (--block-update), 1 (--ubi-update) or 2 (--file-update)"
                             % legacy_op)
        if ops and set(ops) != {LEGACY_OPS[legacy_op]}:
            raise UsageError("-p %s means --%s; it does not go with --%s" % (legacy_op, LEGACY_OPS[legacy_op],
                                                                          ", --".join(ops)))
        ops = (LEGACY_OPS[legacy_op],)

    if incremental or config:
        if append or read or info or gzip_path or ops or install_dropin or uninstall_dropin:
            raise UsageError("--incremental makes a package with -c PKG; no other action goes with it")
        if signing["gen_key"] or signing["keys"]:
            raise UsageError("--gen-key and --key do not go with --incremental (sign it with --sign KEY)")
        return _incremental(create, incremental, config, begin, end, fmt, tool_id, threshold, jobs, keep, as_json,
                            signing)
    if version:  # mk/ota.mk tells our otapack (and a drop-in launcher's defaults) from the vendor's by this
        click.echo(dropin.version_text())
        return 0
    if signing["gen_key"] or signing["sign_key"]:
        return _sign(signing, create or append, bool(ops or create), sync)
    if (signing["compatible"] or signing["fw_version"]) and not create:
        raise UsageError("--compatible and --fw-version go with -c, or with -a PKG --sign KEY")
    _check_actions(create, append, read, info, gzip_path, ops, fmt, with_manifest, install_dropin, uninstall_dropin)
    for path in (append, read, info, gzip_path):
        _check_not_failed(path)
    if install_dropin or uninstall_dropin:
        def log(m):
            click.echo(m, err=True)

        if install_dropin:
            dropin.install(install_dropin, fmt, tool_id, log=log)
        else:
            dropin.uninstall(uninstall_dropin, log=log)
        return 0
    if create:
        import os

        if os.path.isfile(create + FAILED_SUFFIX):
            os.unlink(create + FAILED_SUFFIX)  # what an earlier build left: this one starts afresh
        env_fmt, env_id = dropin.env_defaults()
        packer.create(create, fmt or env_fmt or DEFAULT_GENERATION, begin, end, tool_id or env_id or packer.DEFAULT_TOOL_ID,
                      with_manifest=with_manifest, compatible=_names(signing["compatible"]),
                      version=signing["fw_version"])
        return 0
    if append:
        if not ops:
            raise UsageError("-a needs an operation (--block-update, --file-add, ...; see --help)")
        masks = packer.parse_masks(default_mask) if default_mask is not None else None
        def log(m):
            click.echo("otapack: %s" % m, err=True)

        specs = packer.operation_specs(ops[0], src, dst, size, mode, old, new, label, masks, skip_special, log,
                                       threshold=_ratio(threshold), jobs=jobs)
        packer.append(append, specs, tool_id, log=log if debug else None, sync=sync, note=log)
        return 0
    if gzip_path:
        packer.gzip_package(gzip_path, keep)
        return 0
    if read and out_layout:
        _, records = package.scan(read, strict=True)
        with open(out_layout, "w") as f:
            f.write("".join(line + "\n" for line in pkginfo.layout_lines(records)))
        return 0
    return _info(info or read, as_json, signing["keys"])


def _check_actions(create, append, read, info, gzip_path, ops, fmt, with_manifest, install_dropin=None,
                   uninstall_dropin=None):
    """Exactly one action, and the options that go with -c or -a only with it."""
    actions = [name for name, value in (("-c", create), ("-a", append), ("-r", read), ("--info", info),
                                        ("--gzip", gzip_path), ("--install-dropin", install_dropin),
                                        ("--uninstall-dropin", uninstall_dropin)) if value]
    if len(actions) != 1:
        raise UsageError("give exactly one of -c, -a, -r, --info, --gzip (got %s)" % (", ".join(actions) or "none"))
    if len(set(ops)) > 1:
        raise UsageError("one operation per call, got --%s" % ", --".join(ops))
    if ops and not append:
        raise UsageError("--%s goes with -a PKG" % ops[0])
    if fmt and not (create or install_dropin):
        raise UsageError("--format goes with -c (appends keep the package's own format)")
    if with_manifest and not create:
        raise UsageError("--manifest goes with -c (appends keep a package's manifest up to date)")


def _incremental(create, dirs, config, begin, end, fmt, tool_id, threshold, jobs, keep, as_json, signing):
    from .. import dropin
    from .. import signing as keys
    from ..packer import incremental

    if not (create and dirs and config):
        raise UsageError("--incremental OLD NEW goes with -c PKG and --config PARTITIONS.mk")
    env_fmt, env_id = dropin.env_defaults()
    key = keys.load_private(signing["sign_key"]) if signing["sign_key"] else None
    report = incremental.make_incremental(create, config, dirs[0], dirs[1], fmt or env_fmt or DEFAULT_GENERATION, begin, end,
                                          tool_id or env_id or incremental.DEFAULT_TOOL_ID, _ratio(threshold), jobs,
                                          keep, key=key, compatible=_names(signing["compatible"]),
                                          version=signing["fw_version"])
    click.echo(json.dumps(report, indent=2) if as_json else incremental.report_text(report))
    return 0


def _names(text):
    return tuple(text.split()) if text else ()


def _sign(o, path, other_action, sync):
    """--gen-key, or --sign on a finished package (-a PKG --sign KEY)."""
    from .. import packer, signing

    if o["gen_key"]:
        click.echo("key id %s: %s, %s.pub" % (signing.generate(o["gen_key"], o["key_type"]), o["gen_key"],
                                              o["gen_key"]))
        return 0
    if not path or other_action:
        raise UsageError("--sign KEY goes with -a PKG and no operation (sign a finished package)")
    _check_not_failed(path)
    key = signing.load_private(o["sign_key"])
    packer.sign(path, key, _names(o["compatible"]) or None, o["fw_version"], sync=sync)
    click.echo("otapack: %s signed by key %s" % (path, signing.key_id(key.get_verifying_key())), err=True)
    return 0


def _ratio(text):
    if text.lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise UsageError("--patch-threshold %r: a ratio above 0 (e.g. 0.95), or 'off'" % text)
    return value


def _info(path, as_json, keys=()):
    from .. import info

    data = info.describe(path, keys)
    bad = [r for r in data["records"] if r["verdict"] != "ok"]
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(_info_text(data))
    if bad:
        click.echo("otapack: %d record(s) fail their checksum: %s"
                   % (len(bad), ", ".join(str(r["index"]) for r in bad)), err=True)
        return 2
    if keys and data["signature"] != "good":
        click.echo("otapack: %s is not signed by the key(s) given: %s" % (path, data["signature"]), err=True)
        return 2
    return 0


def _info_text(d):
    lines = [
        "package:    %s (%s)" % (d["package"], "gzip" if d["compressed"] else "raw"),
        "generation: %s" % d["generation"],
        "header:     %d records, %d data bytes, checksum %s" % (d["record_count"], d["total_data"], d["header_checksum"]),
        "scripts:    begin %d bytes, end %d bytes" % (d["scripts"]["begin"], d["scripts"]["end"]),
    ]
    if d["tool_id"]:
        lines.append("tool id:    %s" % d["tool_id"])
    if d.get("manifest"):
        lines.append("manifest:   %s" % d["manifest"]["text"])
    lines.append("%3s %-11s %10s %10s %8s  %-8s %s" % ("#", "op", "data", "dst_size", "mode", "checksum", "target"))
    for r in d["records"]:
        targets = " ".join(r["targets"])
        if r["masks"]:
            targets = " ".join("%s[mask %s]" % (t, "none" if m is None else m)
                               for t, m in zip(r["targets"], r["masks"]))
        extra = ""
        if r["src_name"]:
            extra += "  src=%s" % r["src_name"]
        if r["label"]:
            extra += "  label=%s" % r["label"]
        lines.append("%3d %-11s %10d %#10x %8s  %-8s %s%s" % (r["index"], r["op"], r["data_len"], r["dst_size"],
                                                             r["mode"], r["verdict"], targets, extra))
    return "\n".join(lines)


#: where a drop-in moves a package whose append was refused (see main)
FAILED_SUFFIX = ".failed"


def _append_path(args):
    """The PKG of -a PKG (any spelling getopt takes) in a command line, or None."""
    ctx = click.Context(cli)
    takes = {o: not p.is_flag and not p.count for p in cli.get_params(ctx) if isinstance(p, click.Option)
             for o in p.opts + p.secondary_opts}
    try:
        args = expand_prefixes(args, takes, VENDOR_LONG_OPTIONS)
    except click.UsageError:
        return None
    words = iter(args)
    for arg in words:
        if arg == "--":
            return None
        if arg in ("-a", "--append"):
            return next(words, None)
        if arg.startswith("--append="):
            return arg[len("--append="):]
        if arg.startswith("-a") and not arg.startswith("--"):
            return arg[2:]
        if takes.get(arg):
            next(words, None)
    return None


def _check_not_failed(path):
    """A drop-in moved path aside after a refused append: say so rather than 'not found'."""
    import os

    if path and not os.path.exists(path) and os.path.exists(path + FAILED_SUFFIX):
        raise InputError("%s: an earlier append to it was refused, and the package, missing that record, was moved "
                         "to %s%s; fix that error and build again (-c starts afresh)" % (path, path, FAILED_SUFFIX))


def main(argv=None):
    """Run otapack. Run by the drop-in launcher (SSTAROTA_DROPIN set), a refused append moves the
    package to PKG.failed: the SDK's ota.mk hides an append's exit status behind the `if` that
    follows it and gzips the package anyway, and must not ship one missing a record."""
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    code = run(cli, args, "otapack", force_code=2)
    if code == 2 and os.environ.get("SSTAROTA_DROPIN"):
        path = _append_path(args)
        if path and os.path.isfile(path):
            try:
                os.replace(path, path + FAILED_SUFFIX)
            except OSError as exc:
                sys.stderr.write("otapack: error: cannot move %s aside: %s\n" % (path, exc.strerror))
            else:
                sys.stderr.write("otapack: error: %s moved to %s%s: it misses the record refused above, and the SDK's "
                                 "ota.mk would ship it\n" % (path, path, FAILED_SUFFIX))
    return code


if __name__ == "__main__":
    sys.exit(main())
