"""The static checks of a target name from an untrusted package (confine.py reaches it)."""

from .errors import PackageError


def check_target(target):
    """The components of a target path. Refuses NUL, '..' components and a last component
    that is empty or '.' (a trailing '/' or '/.' names a directory). A run of '/' counts as
    one, as the kernel reads it and as the vendor's otapack writes it for a dir prefix given
    with a trailing '/' (`/customer//x`); a '.' component is dropped, as the kernel reads it
    (`$(DIR)/./lib` in a makefile gives `/customer/./lib/x`)."""
    if not target or "\0" in target:
        raise PackageError("unsafe target %r: empty or contains NUL" % target)
    comps = target.split("/")
    if comps[-1] in ("", "."):
        raise PackageError("unsafe target %r: it has %s last component (it names a directory)"
                           % (target, "an empty" if comps[-1] == "" else "a '.'"))
    if ".." in comps:
        raise PackageError("unsafe target %r: it has a '..' component" % target)
    return [c for c in comps if c not in ("", ".")]
