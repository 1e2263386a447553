"""The otapack operation flags (--block-update, --file-add, ...) and the records each makes."""

from .. import schema
from ..errors import UsageError
from ..opflags import OPERATIONS
from .data import FileData
from .records import DEFAULT_THRESHOLD, RecordSpec, add_spec, delete_spec, delta_spec
from .trees import dir_specs


def parse_masks(text):
    """--default-mask "1 0": one 0/1 per target, the rest default to 1."""
    masks = []
    for word in text.split():
        if word not in ("0", "1"):
            raise UsageError("--default-mask %r: each mask is 0 or 1, separated by spaces" % text)
        masks.append(int(word))
    if len(masks) > schema.MAX_TARGETS:
        raise UsageError("--default-mask gives %d masks, at most %d" % (len(masks), schema.MAX_TARGETS))
    return masks


#: the operations that store one image or file whole, and their op codes
_WHOLE = {"block-update": schema.OP_BLOCK, "ubi-update": schema.OP_UBI, "file-update": schema.OP_FILE_UPDATE}


_FLAG = {"s": "-s SOURCE", "d": "-d TARGET", "o": "-o OLD", "n": "-n NEW"}


def operation_specs(operation, src=None, dst=None, size=0, mode=0, old=None, new=None, label="",
                    masks=None, skip_special=False, log=None, patch_fn=None, threshold=DEFAULT_THRESHOLD,
                    jobs=None):
    """The records one otapack -a call adds, from the vendor's options."""
    given = {"s": src, "d": dst, "o": old, "n": new}
    missing = [_FLAG[k] for k in OPERATIONS[operation][0] if not given[k]]
    if missing:
        raise UsageError("--%s needs %s" % (operation, " and ".join(missing)))
    if operation in _WHOLE:
        source = FileData(src)
        specs = [RecordSpec(_WHOLE[operation], dst, source, dst_size=size, mode=mode, src_name=source.name, label=label)]
    elif operation in ("file-add", "script-add"):
        op = schema.OP_FILE_ADD if operation == "file-add" else schema.OP_SCRIPT
        specs = [add_spec(src, dst, op, label)]
    elif operation == "file-delete":
        specs = [delete_spec(dst, mode, size, label)]
    elif operation == "file-update-diff":
        specs = [delta_spec(old, new, dst, size, mode, label, patch_fn=patch_fn, threshold=threshold, log=log)]
    else:
        specs = dir_specs(old, new, dst, as_deltas=operation == "dir-update-diff", skip_special=skip_special,
                          log=log, patch_fn=patch_fn, threshold=threshold, jobs=jobs)
        for spec in specs:
            spec.label = label
    for spec in specs:
        spec.masks = masks
    if masks and log and specs:
        extra = len(masks) - len(schema.split_targets(specs[0].dst))
        if extra > 0:  # stored, as the vendor's 1.6 stores them; no target uses them
            log("warning: --default-mask gives %d mask(s) more than -d has targets; stored as the vendor's "
                "otapack stores them, used by no target" % extra)
    return specs

