"""Tree updates: what changed between two trees, and the records that carry the change
(full files, or deltas made in parallel processes)."""

import os
import stat
from typing import List

from .. import delta, schema
from ..errors import InputError
from .data import CHUNK, FileData
from .records import RecordSpec, add_spec, delete_spec, delta_spec
from ..recordclass import dataclass, field


@dataclass
class TreeChanges:
    """Relative paths of the files that differ between two trees, each list sorted."""

    changed: List[str] = field(default_factory=list)
    added: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def _walk(root, skip_special, skipped):
    """Relative paths of the regular files under root; anything else is an error."""
    if not os.path.isdir(root):
        raise InputError("%s is not a directory" % root)
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = st
                continue
            kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
            if not skip_special:
                raise InputError(
                    "%s is a %s: the package format carries regular files only (remove it, or pass --skip-special)"
                    % (full, kind)
                )
            skipped.append(full)
        # os.walk does not descend into symlinked directories; they were reported above
    return found


def _same_content(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(CHUNK)
            y = fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def compare_trees(old, new, skip_special=False):
    """Compare two trees: changed, added and removed files, each sorted by path."""
    result = TreeChanges()
    old_files = _walk(old, skip_special, result.skipped)
    new_files = _walk(new, skip_special, result.skipped)
    for rel in sorted(new_files):
        if rel not in old_files:
            result.added.append(rel)
        elif old_files[rel].st_size != new_files[rel].st_size or not _same_content(
            os.path.join(old, rel), os.path.join(new, rel)
        ):
            result.changed.append(rel)
    result.removed = sorted(r for r in old_files if r not in new_files)
    _check_kinds(old, old_files, new, new_files)
    return result


def _check_kinds(old, old_files, new, new_files):
    """Refuse a path that is a file in one tree and a directory in the other: its records
    (the file removed, files under it added, or the reverse) install in no order."""
    for files, other, here, there in ((new_files, old_files, new, old), (old_files, new_files, old, new)):
        for rel in files:
            parts = rel.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in other:
                    raise InputError("%s is a file and %s a directory: no package installs that change (make it "
                                     "in two packages, or leave it out of the trees)"
                                     % (os.path.join(there, parent), os.path.join(here, parent)))


def dot_entries(changes):
    """The changed, added and removed paths with a component starting with '.' (the vendor's
    dir scans skip every such entry, whole directories included)."""
    return [rel for rel in changes.changed + changes.added + changes.removed
            if any(part.startswith(".") for part in rel.split("/"))]


def join_target(prefix, rel):
    """The vendor's join, not normalised: ``-d /customer/`` gives ``/customer//x``."""
    return prefix + "/" + rel


def _by_target(specs):
    return sorted(specs, key=lambda s: s.dst)


def dir_specs(old, new, prefix, as_deltas=False, skip_special=False, log=None, patch_fn=None,
              threshold=None, jobs=None):
    """Records for a --dir-update / --dir-update-diff: changed, then added, then removed.

    With as_deltas, the changed files' patches are made in parallel (jobs processes,
    default: one per core)."""
    d = compare_trees(old, new, skip_special)
    if log:
        for path in d.skipped:
            log("warning: skipped %s (not a regular file)" % path)
        if prefix.endswith("/") and (d.changed or d.added or d.removed):
            log("note: -d %s ends with '/': targets are %s/PATH, not normalised, as the vendor's otapack "
                "writes them (give -d without the trailing '/' for single slashes)" % (prefix, prefix))
        dotted = dot_entries(d)
        if dotted:
            log("note: %d change(s) under names starting with '.' are packed (the vendor's otapack skips "
                "them): %s" % (len(dotted), ", ".join(dotted)))
    changed = []
    if as_deltas:
        pairs = [(os.path.join(old, rel), os.path.join(new, rel)) for rel in d.changed]
        patches = make_patches(pairs, patch_fn, jobs)
        for rel, (old_path, new_path), patch in zip(d.changed, pairs, patches):
            changed.append(delta_spec(old_path, new_path, join_target(prefix, rel), patch=patch,
                                     threshold=threshold, log=log))
    else:
        for rel in d.changed:
            changed.append(RecordSpec(schema.OP_FILE_UPDATE, join_target(prefix, rel),
                                      FileData(os.path.join(new, rel)), src_name=os.path.basename(rel)))
    added = [add_spec(os.path.join(new, rel), join_target(prefix, rel)) for rel in d.added]
    removed = [delete_spec(join_target(prefix, rel)) for rel in d.removed]
    specs = _by_target(changed) + _by_target(added) + _by_target(removed)
    for spec in specs:
        spec.one_target = True
    return specs


def make_patches(pairs, patch_fn=None, jobs=None):
    """Patches for (old, new) path pairs, made in parallel processes when there are several."""
    fn = patch_fn or delta.make_patch
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(pairs) <= 1 or patch_fn is not None:
        return [fn(o, n) for o, n in pairs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(pairs))) as pool:
        return list(pool.map(delta.make_patch_pair, pairs))

