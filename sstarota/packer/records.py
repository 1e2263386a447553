"""What goes into a record: the RecordSpec, its checks against a generation, and the
specs for one file (update, add, delete, delta). Trees are in trees.py; the otapack
operation flags in operations.py."""

import hashlib
import os
from typing import List, Optional


from .. import delta, manifest, paths, schema
from ..codec import LayoutError
from ..errors import InputError, PackageError, UsageError
from .data import BytesData, FileData, RecordData
from ..recordclass import dataclass


@dataclass
class RecordSpec:
    """One record to append: op, target(s), data, and the header fields."""

    op: int
    dst: str
    source: Optional[RecordData] = None
    dst_size: int = 0
    mode: int = 0
    src_name: str = ""
    label: str = ""
    masks: Optional[List[int]] = None
    delta: Optional[manifest.DeltaInfo] = None  # old/new lengths and hashes of a delta
    one_target: bool = False  # a tree update's file: its dst names one path, whatever it holds

    @property
    def data_len(self):
        return self.source.length if self.source else 0

    def header_fields(self):
        """The record header's fields every generation has (schema adds its own)."""
        return dict(data_len=self.data_len, dst=self.dst, dst_size=self.dst_size, mode=self.mode, op=self.op)


def validate(gen, spec, manifest_record=False):
    """Check a spec against a generation's fields and limits before anything is written.
    Only the packer's own manifest record (manifest_record=True) may be named like it."""
    what = "%s record for %s" % (schema.OP_NAMES[spec.op], spec.dst)
    if not manifest_record and manifest.NAME in (spec.dst, spec.src_name if gen.multi_target else None):
        raise UsageError("%s: the name %s is the sstarota manifest's; otaunpack would refuse the package"
                         % (what, manifest.NAME))
    # 0.3/0.4: one target, the text as it stands (spaces included); 1.6: split on spaces
    targets = schema.split_targets(spec.dst) if gen.multi_target else [spec.dst]
    if not targets or not spec.dst.strip():
        raise UsageError("%s: no target (-d)" % what)
    if gen.multi_target and spec.one_target and (len(targets) != 1 or targets[0] != spec.dst):
        raise InputError("%s: the 1.6 format splits a target on whitespace, so this file would be written as %s; "
                         "rename it (or pack the tree in 0.4)" % (what, " and ".join(repr(t) for t in targets)))
    if not manifest_record:
        for target in targets:
            try:
                paths.check_target(target)
            except PackageError as exc:
                raise InputError("%s: otaunpack refuses it (%s)" % (what, exc)) from None
    if len(targets) > schema.MAX_TARGETS:  # the vendor packs them, without masks: see docs/FORMAT.md
        raise UsageError("%d targets in -d, at most %d" % (len(targets), schema.MAX_TARGETS))
    if not gen.multi_target and spec.label:
        raise UsageError("-l/--add-log needs the 1.6 format; this package is %s" % gen.name)
    if not gen.multi_target and spec.masks is not None:
        raise UsageError("--default-mask needs the 1.6 format; this package is %s" % gen.name)
    if spec.data_len > gen.max_data:
        raise InputError(
            "%s: %d bytes exceed the %s format's limit of %d bytes per record" % (what, spec.data_len, gen.name, gen.max_data)
        )
    # a file-diff's data is the patch: delta_spec checks the new image against -t instead
    if spec.dst_size and spec.data_len > spec.dst_size and spec.op in (
        schema.OP_BLOCK, schema.OP_UBI, schema.OP_FILE_UPDATE
    ):
        raise InputError(
            "%s: the image is %d bytes, larger than its target size -t %d (0x%x)"
            % (what, spec.data_len, spec.dst_size, spec.dst_size)
        )
    for name in ("dst_size", "mode"):
        value = getattr(spec, name)
        limit = gen.max_data if name == "dst_size" else schema.U32_MAX
        if not 0 <= value <= limit:
            raise InputError("%s: %s %d does not fit its field" % (what, name, value))
    try:
        return gen.record.build(gen.record_fields(spec.header_fields(), None, spec.src_name, spec.label, spec.masks))
    except LayoutError as exc:
        raise InputError("%s: %s does not fit the %s format (%s)" % (what, exc.field, gen.name, exc.message)) from None


def add_spec(path, dst, op=schema.OP_FILE_ADD, label=""):
    """file-add and script-add: the mode is the source's st_mode, dst_size its length."""
    src = FileData(path)
    return RecordSpec(op, dst, src, dst_size=src.length, mode=src.st.st_mode, src_name=src.name, label=label)


def delete_src_name(dst):
    """The 1.6 source name of a file-delete, as the vendor takes it from the whole -d text:
    what follows its last '/', or all of it when that '/' is the first character or there
    is none (``/a.txt`` -> ``/a.txt``, ``/m/n1 /m/n2`` -> ``n2``, ``/a b/c`` -> ``c``)."""
    cut = dst.rfind("/")
    return dst[cut + 1:] if cut > 0 else dst


def delete_spec(dst, mode=0, dst_size=0, label=""):
    return RecordSpec(schema.OP_FILE_DELETE, dst, None, dst_size=dst_size, mode=mode,
                      src_name=delete_src_name(dst), label=label)


#: a delta no smaller than this fraction of NEW is packed as a full update instead
DEFAULT_THRESHOLD = 0.95


def full_update_op(dst):
    """The op a full update of this target takes when its delta does not pay."""
    first = (schema.split_targets(dst) or [dst])[0]
    if first.startswith("/dev/ubi"):
        return schema.OP_UBI
    if first.startswith("/dev/"):
        return schema.OP_BLOCK
    return schema.OP_FILE_UPDATE


def _digest(path):
    h = hashlib.sha256()
    n = 0
    for piece in FileData(path).chunks():
        h.update(piece)
        n += len(piece)
    return n, h.hexdigest()


def delta_spec(old_path, new_path, dst, dst_size=0, mode=0, label="", patch_fn=None, patch=None,
              threshold=DEFAULT_THRESHOLD, log=None):
    """A file-diff record (BSDIFF40 from old to new), or a full update when the patch is not
    smaller than threshold x NEW (threshold None: always the patch)."""
    new_src = FileData(new_path)
    FileData(old_path)
    if dst_size and new_src.length > dst_size:
        raise InputError("%s: the new image is %d bytes, larger than its target size -t %d (0x%x)"
                         % (dst, new_src.length, dst_size, dst_size))
    if patch is None:
        patch = (patch_fn or delta.make_patch)(old_path, new_path)
    if threshold is not None and len(patch) >= threshold * new_src.length:
        op = full_update_op(dst)
        if log:
            log("%s: the patch is %d bytes, not smaller than %g%% of the new file (%d bytes): "
                "packed as a full %s instead" % (dst, len(patch), threshold * 100, new_src.length,
                                                 schema.OP_NAMES[op]))
        return RecordSpec(op, dst, new_src, dst_size=dst_size, mode=mode, src_name=new_src.name, label=label)
    old_len, old_sha = _digest(old_path)
    new_len, new_sha = _digest(new_path)
    name = os.path.basename(new_path) + ".diff"
    return RecordSpec(schema.OP_FILE_DIFF, dst, BytesData(patch, name), dst_size=dst_size, mode=mode,
                      src_name=name, label=label, delta=manifest.DeltaInfo(old_len, old_sha, new_len, new_sha))

