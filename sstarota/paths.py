"""Target paths from an untrusted package, confined under an optional root."""

import os

from .errors import PackageError


def check_target(target):
    """Components of a target path; refuses NUL, empty, '.' and '..' components."""
    if not target or "\0" in target:
        raise PackageError("unsafe target %r: empty or contains NUL" % target)
    body = target[1:] if target.startswith("/") else target
    comps = body.split("/")
    bad = [c for c in comps if c in ("", ".", "..")]
    if bad:
        raise PackageError("unsafe target %r: it has %s component%s" % (
            target, "an empty" if bad[0] == "" else "a %r" % bad[0], ""))
    return comps


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve(target, root=None):
    """The host path a target names: under root when one is given, else as it stands.

    Under a root, nothing outside it is reachable: '..' is refused, and an existing path
    component that is a symlink must resolve inside the root.
    """
    comps = check_target(target)
    if root is None:
        return target
    real_root = os.path.realpath(root)
    cur = real_root
    for c in comps:
        cur = os.path.join(cur, c)
        if os.path.islink(cur):
            real = os.path.realpath(cur)
            if not _inside(real, real_root):
                raise PackageError("target %s: %s is a symlink that leads out of the root %s"
                                   % (target, cur, root))
    return os.path.join(real_root, *comps)
