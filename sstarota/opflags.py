"""The otapack operation flags (--block-update, --file-add, ...): what each needs on the
command line and its line in otapack --help. The one registry of them: otapack's flags and
help are made from it, and the packer (packer/operations.py) checks a call against it. Imports
nothing, so that otapack --help loads neither the packer nor the format."""

#: in --help order: the flag -> (the options it needs: s, d, o, n; its --help line)
OPERATIONS = {
    "block-update": (("s", "d"), "Raw image to a block/MTD device."),
    "ubi-update": (("s", "d"), "UBI volume image."),
    "file-update": (("s", "d"), "Replace one file."),
    "file-add": (("s", "d"), "Add one file (keeps its mode)."),
    "file-delete": (("d",), "Delete one file."),
    "file-update-diff": (("o", "n", "d"), "bsdiff delta of -o OLD to -n NEW."),
    "dir-update": (("o", "n", "d"), "Tree -o OLD to -n NEW, full files."),
    "dir-update-diff": (("o", "n", "d"), "Tree -o OLD to -n NEW, changed files as deltas."),
    "script-add": (("s", "d"), "A script run on the board."),
}
