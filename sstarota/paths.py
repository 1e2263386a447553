"""The static checks of a target name from an untrusted package (confine.py reaches it)."""

from .errors import PackageError


def check_target(target):
    """The components of a target path. Refuses NUL, '.' and '..' components and an empty
    last component (a trailing '/' names a directory). A run of '/' counts as one, as the
    kernel reads it and as the vendor's otapack writes it for a dir prefix given with a
    trailing '/' (`/customer//x`)."""
    if not target or "\0" in target:
        raise PackageError("unsafe target %r: empty or contains NUL" % target)
    comps = target.split("/")
    if comps[-1] == "":
        raise PackageError("unsafe target %r: it has an empty last component (it names a directory)" % target)
    bad = [c for c in comps if c in (".", "..")]
    if bad:
        raise PackageError("unsafe target %r: it has a %r component" % (target, bad[0]))
    return [c for c in comps if c]
