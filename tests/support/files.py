"""Trees of files: made from {path: bytes}, read back, and snapshots of everything under a root."""

import hashlib
import os
import stat
from pathlib import Path


def tree(root, files):
    """Make a tree of {relative path: bytes} under root (0644 files); return root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, 0o644)
    return root


def files_of(root, skip=("var/lib/sstarota",)):
    """{relative path: bytes} of the regular files under root, less the directories in skip
    (by default the board's state directory: the ledger of the vendor deltas it patched)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if os.path.relpath(dirpath, root) in skip:
            continue
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def snapshot(root, meta=False):
    """Every entry under root: relative path -> (kind, content), the content a file's bytes,
    a link's target, a device's rdev. With meta, the root itself too and each entry's mode,
    owner and (files) mtime: a change of any of them shows."""
    out = {}
    if meta:
        out["."] = ("dir", stat.S_IMODE(os.lstat(root).st_mode))
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                kind, val = "link", os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
                kind, val = "file", data
                if meta:
                    val = (hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                kind, val = "dir", None
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind, val = stat.S_IFMT(st.st_mode), st.st_rdev
            else:
                kind, val = stat.S_IFMT(st.st_mode), None
            out[rel] = (kind, val) + ((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) if meta else ())
    return out


def made(out):
    """The package make wrote (out/SStarOta.bin.gz), inflated with the real gzip."""
    import subprocess

    return subprocess.run(["gzip", "-dc", str(Path(out) / "SStarOta.bin.gz")], capture_output=True,
                          check=True).stdout
