"""otapack --incremental OLD NEW: a package of only what changed between two whole builds.

The partitions come from an ALKAID partition config (OTA_IMAGE_LIST, <part>_otablk,
_patsize, _fstype, _otamask, _otaimg; read by read_config), their images from the two image
directories under the names ALKAID's ota.mk gives them (image_name); <part>_otaenv names a
script (ota.mk's fw_setenv scripts) added after the partition when it is packed. Per partition:

  same   the old and new images are identical: nothing packed
  delta  a raw image or a read-only filesystem image (no fstype, squashfs, ramfs): a
         BSDIFF40 patch of the old image to the new one, when it is smaller than
         threshold x the new image (0.95, as Android's ota_from_target_files)
  full   a writable filesystem (ubifs, jffs2, ext4, lfs, fwfs: the vendor guide forbids
         deltas there, the filesystem changes on the board), no old image, or a patch that
         does not pay

Patches are made in parallel processes (trees.make_patches). The manifest is always on: it
carries the SHA-256 of every delta's source, so a board holding another base refuses the
package before writing anything. The report (a table, or JSON) gives per partition the
choice, the old/new/patch sizes and what it added to the package, and the package's size
against the full one (every partition whole, built alongside and removed).
"""

import os
import re
import shutil
import subprocess
import tempfile
from typing import List, Optional

from .. import schema
from ..errors import InputError
from .build import DEFAULT_TOOL_ID, build
from .compress import gzip_package
from .data import FileData
from .records import DEFAULT_THRESHOLD, RecordSpec, add_spec, delta_spec, full_update_op
from .sign import sign
from .trees import _same_content, make_patches
from ..recordclass import asdict, dataclass, field

SUFFIXES = {"OTABLK": "_otablk", "PATSIZE": "_patsize", "FSTYPE": "_fstype", "BLKENV": "_blkenv",
            "OTAMASK": "_otamask", "RESOUCE": "_resouce"}
#: fstypes whose images are patched as raw bytes (a read-only image, or none: a raw partition)
DELTA_FSTYPES = ("", "squashfs", "ramfs")
_ASSIGN = re.compile(r"^\s*(?:export\s+|override\s+)?([^\s:+?=#]+)\s*(::=|:=|\+=|\?=|=)\s*(.*)$")
_REF = re.compile(r"\$[({]([^(){}$]+)[)}]")


@dataclass
class Partition:
    name: str
    targets: List[str]
    size: int
    fstype: str = ""
    image: str = ""  # file name under the image directories
    masks: Optional[List[int]] = None
    script: str = ""  # <part>_otaenv: a script record after the partition's when it is packed


@dataclass
class Choice:
    partition: str
    fstype: str
    choice: str  # same, delta, full
    old: Optional[int]
    new: int
    patch: Optional[int] = None
    packed: int = 0  # record data bytes it added to the package
    reason: str = ""
    targets: List[str] = field(default_factory=list)


# ------------------------------------------------------------------ the partition config

def _expand(text, env, depth=0):
    if depth > 20:
        raise InputError("partition config: variables refer to themselves (%s)" % text)
    out = _REF.sub(lambda m: _expand(env.get(m.group(1).strip(), ""), env, depth + 1), text)
    return out.replace("$$", "$")


#: the settings read per partition of OTA_IMAGE_LIST
SETTINGS = ("otablk", "patsize", "fstype", "otamask", "otaimg", "otaenv")
_MARK = "SSTAROTA-VALUE:"
#: make reads the config after the suffixes, then prints OTA_IMAGE_LIST and every partition setting
_PRINTER = """
sstarota_vars := OTA_IMAGE_LIST $(foreach p,$(OTA_IMAGE_LIST),$(foreach s,%s,$(p)_$(s)))
define sstarota_nl


endef
$(foreach v,$(sstarota_vars),$(info %s$(v)=$(subst $(sstarota_nl),<NEWLINE>,$($(v)))))
.PHONY: sstarota-print
sstarota-print: ; @:
""" % (" ".join(SETTINGS), _MARK)
#: what only make can read: directives and function calls
_MAKE_ONLY = re.compile(r"^\s*(?:-?include|sinclude|ifeq|ifneq|ifdef|ifndef|else|endif|define|endef)\b|"
                        r"\$[({][a-z-]+[ \t]", re.M)


def read_variables(path):
    """The make variables a partition config sets, with $(OTABLK)-style suffixes predefined:
    OTA_IMAGE_LIST and the settings of its partitions, read by make itself (conditionals,
    include and functions as the SDK build reads them; the config's $(shell ...) runs as it
    does in the build). Without make, plain assignments only (a config needing more is refused)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise InputError("cannot read the partition config %s: %s" % (path, exc.strerror)) from None
    make = shutil.which("make")
    if make:
        return _read_with_make(make, path)
    found = _MAKE_ONLY.search(text)
    if found:
        raise InputError("partition config %s: %r needs make to read it, and make is not on PATH: install make"
                         % (path, found.group(0).strip()))
    return _read_plain(text)


def _read_with_make(make, path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES")}
    with tempfile.TemporaryDirectory(prefix="sstarota-config-") as d:
        first, last = os.path.join(d, "suffixes.mk"), os.path.join(d, "print.mk")
        with open(first, "w") as f:
            # bash, as mk/ota.mk: configs compute sizes with $(shell ...) of bash's $[...]
            f.write("".join("%s := %s\n" % kv for kv in SUFFIXES.items()) +
                    ("SHELL := %s\n" % shutil.which("bash") if shutil.which("bash") else ""))
        with open(last, "w") as f:
            f.write(_PRINTER)
        proc = subprocess.run([make, "-s", "-r", "-R", "--no-print-directory", "-I",
                               os.path.dirname(os.path.abspath(path)), "-f", first, "-f", path, "-f", last,
                               "sstarota-print"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise InputError("make cannot read the partition config %s: %s" % (path, err[-1] if err else
                                                                            "exit %d" % proc.returncode))
    env = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        if line.startswith(_MARK):
            name, _, value = line[len(_MARK):].partition("=")
            if "<NEWLINE>" in value:
                raise InputError("partition config %s: %s spans several lines; give it on one line" % (path, name))
            env[name] = value.strip()
    return env


def _read_plain(text):
    env = dict(SUFFIXES)
    for line in text.replace("\\\n", " ").splitlines():
        m = _ASSIGN.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        name, op, value = _expand(m.group(1), env), m.group(2), m.group(3).strip()
        if op == "?=" and name in env:
            continue
        value = _expand(value, env)
        env[name] = (env.get(name, "") + " " + value).strip() if op == "+=" else value
    return env


def image_name(part, fstype):
    """The image ALKAID's ota.mk packs for a partition (non-sdmmc flows), or ''."""
    raw = {"ipl": "ipl_s.bin", "ipl_cust": "ipl_cust_s.bin", "uboot": "uboot_s.bin", "boot": "boot.bin",
           "logo": "logo", "kernel": "kernel"}
    if not fstype:
        return raw.get(part, "")
    if fstype == "ramfs":
        return "rootfs.ramfs" if part == "rootfs" else ""
    return "%s.%s" % (part, "sqfs" if fstype == "squashfs" else fstype)


def _number(text, what):
    t = text.strip()
    try:
        return int(t, 16) if t.lower().startswith("0x") else int(t, 10)
    except ValueError:
        raise InputError("partition config: %s = %r is not a number (hex with 0x, else decimal)" % (what, text)) \
            from None


def read_config(path):
    """The partitions of OTA_IMAGE_LIST, checked: each has targets, a size and an image name."""
    env = read_variables(path)
    names = list(dict.fromkeys(env.get("OTA_IMAGE_LIST", "").split()))  # a name listed twice: once, first place
    if not names:
        raise InputError("partition config %s: OTA_IMAGE_LIST is empty or not set" % path)
    parts = []
    for p in names:
        targets = env.get(p + "_otablk", "").split()
        if not targets:
            raise InputError("partition config: %s is in OTA_IMAGE_LIST but %s_otablk is not set" % (p, p))
        if not env.get(p + "_patsize", "").strip():
            raise InputError("partition config: %s_patsize is not set (the partition size)" % p)
        fstype = env.get(p + "_fstype", "").strip()
        image = env.get(p + "_otaimg", "").strip() or image_name(p, fstype)
        if not image:
            raise InputError("partition config: no image name for %s (fstype '%s'): set %s_otaimg" % (p, fstype, p))
        masks = env.get(p + "_otamask", "").split()
        size = _number(env[p + "_patsize"], p + "_patsize")
        if size <= 0:
            raise InputError("partition config: %s_patsize is %s: a partition size is above 0"
                             % (p, env[p + "_patsize"]))
        parts.append(Partition(p, targets, size, fstype, image,
                               [_number(m, p + "_otamask") for m in masks] if masks else None,
                               env.get(p + "_otaenv", "").strip()))
    return parts


# ------------------------------------------------------------------ choosing, per partition

def _sizes(part, old_dir, new_dir):
    new = os.path.join(new_dir, part.image)
    old = os.path.join(old_dir, part.image)
    if not os.path.isfile(new):
        raise InputError("%s: the new image %s is missing" % (part.name, new))
    n = os.path.getsize(new)
    if n > part.size:
        raise InputError("%s: the new image %s is %d bytes, larger than the partition (%d)" % (part.name, new, n,
                                                                                              part.size))
    return old, new, (os.path.getsize(old) if os.path.isfile(old) else None), n


def choose(parts, old_dir, new_dir, threshold=DEFAULT_THRESHOLD, jobs=None):
    """A Choice per partition and the patches of the deltas (by partition name)."""
    choices, pending = [], []
    for p in parts:
        old, new, old_n, new_n = _sizes(p, old_dir, new_dir)
        c = Choice(p.name, p.fstype, "full", old_n, new_n, targets=list(p.targets))
        if old_n is None:
            c.reason = "no old image"
        elif old_n == new_n and _same_content(old, new):
            c.choice, c.reason = "same", "identical"
        elif p.fstype not in DELTA_FSTYPES:
            c.reason = "%s is written on the board: packed whole" % p.fstype
        else:
            pending.append((c, old, new))
        choices.append(c)
    patches = make_patches([(o, n) for _, o, n in pending], jobs=jobs)
    made = {}
    for (c, _, _), patch in zip(pending, patches):
        c.patch = len(patch)
        if threshold is not None and len(patch) >= threshold * c.new:
            c.reason = "the patch is %.0f%% of the image (threshold %.0f%%)" % (100.0 * len(patch) / max(c.new, 1),
                                                                            100 * threshold)
        else:
            c.choice, c.reason = "delta", "patch %.1f%% of the image" % (100.0 * len(patch) / max(c.new, 1))
            made[c.partition] = patch
    return choices, made


def specs_for(parts, choices, patches, old_dir, new_dir, generation):
    """The records: 1.6 one per partition (every target, its masks, the name as label); the
    older formats one per target, as ALKAID's ota.mk packs them."""
    specs = []
    for p, c in zip(parts, choices):
        if c.choice == "same":
            continue
        old, new = os.path.join(old_dir, p.image), os.path.join(new_dir, p.image)
        dsts = [" ".join(p.targets)] if generation == "1.6" else p.targets
        label = p.name if generation == "1.6" else ""
        for dst in dsts:
            if c.choice == "delta":
                spec = delta_spec(old, new, dst, p.size, 0, label, patch=patches[p.name], threshold=None)
            else:
                spec = full_spec(dst, new, p.size, label)
            if generation == "1.6":
                spec.masks = p.masks
            c.packed += spec.data_len
            specs.append(spec)
        if p.script:
            spec = script_spec(p, generation)
            c.packed += spec.data_len
            specs.append(spec)
    return specs


def script_spec(part, generation):
    """The partition's env script, as ota.mk adds it: -d NAME (1.6: -l NAME too) --script-add."""
    name = os.path.basename(part.script)
    return add_spec(part.script, name, schema.OP_SCRIPT, name if generation == "1.6" else "")


def full_spec(dst, image, size, label=""):
    data = FileData(image)
    return RecordSpec(full_update_op(dst), dst, data, dst_size=size, src_name=data.name, label=label)


# ------------------------------------------------------------------ the package and its report

def make_incremental(pkg, config, old_dir, new_dir, generation=schema.DEFAULT_GENERATION, begin=None, end=None,
                     tool_id=DEFAULT_TOOL_ID, threshold=DEFAULT_THRESHOLD, jobs=None, keep=False, full_size=True,
                     key=None, compatible=(), version=None):
    """Write pkg + '.gz' (pkg itself kept with keep) and return the report (a dict). The
    manifest carries compatible and version when given, and is signed with key (a
    signing.SigningKey) when given."""
    for d in (old_dir, new_dir):
        if not os.path.isdir(d):
            raise InputError("--incremental: %s is not a directory of images" % d)
    parts = read_config(config)
    choices, patches = choose(parts, old_dir, new_dir, threshold, jobs)
    specs = specs_for(parts, choices, patches, old_dir, new_dir, generation)
    build(pkg, specs, generation, begin, end, tool_id, with_manifest=True, compatible=compatible, version=version)
    if key is not None:
        try:
            sign(pkg, key)
        except BaseException:
            os.unlink(pkg)
            raise
    raw_size = os.path.getsize(pkg)
    out = gzip_package(pkg, keep=keep)
    report = {"package": out, "format": generation, "threshold": threshold, "package_raw": raw_size,
              "package_gz": os.path.getsize(out), "partitions": [asdict(c) for c in choices]}
    if full_size:
        report.update(zip(("full_raw", "full_gz"), _full_sizes(parts, new_dir, generation, begin, end, tool_id,
                                                               os.path.dirname(os.path.abspath(pkg)))))
    return report


def _full_sizes(parts, new_dir, generation, begin, end, tool_id, where):
    """Raw and gzip sizes of the full package (every partition whole), built and removed."""
    specs = []
    for p in parts:
        image = os.path.join(new_dir, p.image)
        dsts = [" ".join(p.targets)] if generation == "1.6" else p.targets
        for dst in dsts:
            spec = full_spec(dst, image, p.size, p.name if generation == "1.6" else "")
            spec.masks = p.masks if generation == "1.6" else None
            specs.append(spec)
        if p.script:
            specs.append(script_spec(p, generation))
    fd, tmp = tempfile.mkstemp(prefix=".sstarota-full-", dir=where)
    os.close(fd)
    try:
        build(tmp, specs, generation, begin, end, tool_id, with_manifest=True)
        raw = os.path.getsize(tmp)
        gz = gzip_package(tmp)
        size = os.path.getsize(gz)
        os.unlink(gz)
        return raw, size
    finally:
        for f in (tmp, tmp + ".gz"):
            if os.path.exists(f):
                os.unlink(f)


def report_text(r):
    """The report as a table."""
    lines = ["%-10s %-9s %-6s %10s %10s %10s %10s  %s" % ("partition", "fstype", "choice", "old", "new", "patch",
                                                          "packed", "why")]
    for c in r["partitions"]:
        lines.append("%-10s %-9s %-6s %10s %10d %10s %10d  %s" % (
            c["partition"], c["fstype"] or "raw", c["choice"], "-" if c["old"] is None else c["old"], c["new"],
            "-" if c["patch"] is None else c["patch"], c["packed"], c["reason"]))
    line = "package %s: %d bytes (%d raw)" % (r["package"], r["package_gz"], r["package_raw"])
    if "full_gz" in r:
        line += "; the full package: %d bytes (%d raw), %.1f%%" % (r["full_gz"], r["full_raw"],
                                                                   100.0 * r["package_gz"] / max(r["full_gz"], 1))
    return "\n".join(lines + [line])
