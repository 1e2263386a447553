# sstarota: a drop-in for ALKAID's project/image/ota.mk that drives sstarota's otapack.
# One file: copy it over the SDK's project/image/ota.mk, or `include /path/to/ota.mk` in its place.
#
# Same target (ota_images), variables, prompts and packages as the SDK's own ota.mk:
#   OTA_IMAGE_LIST          partitions offered (from the partition config)
#   <part>$(OTABLK)         target(s), space separated               (kernel_otablk)
#   <part>$(PATSIZE)        partition size, -t                       (kernel_patsize)
#   <part>$(FSTYPE)         squashfs ubifs jffs2 ext4 lfs fwfs, ramfs (rootfs), or empty
#   <part>$(BLKENV)         0.4: shell text for `echo -e`, each line -> /etc/fw_setenv LINE
#   <part>$(OTAMASK)        1.6: --default-mask, e.g. "1 0"
#   <part>_otaimg           sstarota: the image file (under IMAGEDIR) when not the SDK's name
#   FLASH_TYPE              spinand, nor, sdmmc (boot files, the 1.6 kernel env script)
# OTA_FORMAT picks the flow: 0.4 (2021 trees: one record per target, _blkenv scripts) or 1.6
# (2025 trees: one record per partition with masks and a label, kernel_otaenv.sh on spinand,
# SStarOtaLayout.txt). Unset: SSTAROTA_FORMAT, else the version of the SDK's vendor otapack
# (makefiletools/bin/otapack or the otapack.vendor a drop-in keeps), else 0.4.
# Non-interactive (CI): OTA_PARTS="kernel rootfs" or OTA_PARTS=all, OTA_START_SCRIPT,
# OTA_END_SCRIPT. OTA_MANIFEST=1 adds sstarota's manifest. OTA_SIGN_KEY=KEY.pem signs the
# package as the last step (a manifest always). OTA_COMPATIBLE="board .." and OTA_FW_VERSION
# go into the manifest (boards refuse other boards' packages and downgrades; docs/SIGNING.md).
# OTA_TOOL_ID: the 1.6 tool id
# (default: the SDK vendor binary's commit, so packages match its byte for byte).
# OTAPACK: the packer; default $(PROJ_ROOT)/image/makefiletools/bin/otapack when that is
# sstarota's (or its drop-in launcher), else otapack on PATH.
# Output: $(IMAGEDIR)/SStarOta.bin.gz, and with 1.6 $(IMAGEDIR)/SStarOtaLayout.txt.
# ota_images_incremental OTA_BASE=DIR: only what changed since the images in DIR (below).

OTABLK ?= _otablk
PATSIZE ?= _patsize
FSTYPE ?= _fstype
BLKENV ?= _blkenv
OTAMASK ?= _otamask
PROJ_ROOT ?= $(abspath $(CURDIR)/..)
IMAGEDIR ?= $(PROJ_ROOT)/image/output/images
OTAPACK ?=
OTA_FORMAT ?=
OTA_TOOL_ID ?=
OTA_MANIFEST ?=
OTA_SIGN_KEY ?=
OTA_COMPATIBLE ?=
OTA_FW_VERSION ?=
OTA_PARTS ?=
OTA_START_SCRIPT ?=
OTA_END_SCRIPT ?=
OTA_BASE ?=
OTA_PATCH_THRESHOLD ?=
SSTAROTA_INCREMENTAL_BASE ?=
sstarota_makefile := $(firstword $(MAKEFILE_LIST))

# The recipe is bash (the vendor flow relies on bash's `echo -e`); it reads everything from the
# environment, so no value is ever re-quoted: _blkenv text reaches the shell as the vendor's does.
define sstarota_ota_images_sh
set -e -o pipefail
prog=ota_images
PKG=
LAYOUT=
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$PKG" ]; then rm -f "$PKG" "$PKG.gz" "$PKG.failed"; [ -z "$LAYOUT" ] || rm -f "$LAYOUT"; fi' EXIT
die() { echo "$prog: error: $*" >&2; exit 2; }
warn() { echo "$prog: warning: $*" >&2; }
pvar() { local n="SSTAROTA_P_${1}_$2"; val=${!n-}; }   # partition setting -> $val (as make expanded it)
is_ours() { [ -n "$1" ] && "$1" --version 2>/dev/null </dev/null | grep -q '^otapack (sstarota)'; }
vendor_banner() { # file -> "version commit" from the vendor binary's --help, or nothing
    [ -f "$1" ] && [ -x "$1" ] || return 0
    "$1" --help 2>&1 </dev/null | sed -n 's/.*Ota pack internal version \([0-9][0-9.]*\)\( commit: \([0-9A-Za-z]*\)\)\{0,1\}.*/\1 \3/p' | head -n 1
}

SSTAROTA_LIST=$(echo $SSTAROTA_LIST)
FLASH_TYPE=$(echo $FLASH_TYPE)
if [ -z "$SSTAROTA_LIST" ] && [ -z "$(echo $SSTAROTA_LIST_AT_INCLUDE)" ]; then
    # as the SDK's flow: a config without OTA_IMAGE_LIST packs nothing, and that is no error
    echo "$prog: note: OTA_IMAGE_LIST is not set in the partition config: no OTA package for it (as the SDK's flow)" >&2
    exit 0
fi
[ -n "$IMAGEDIR" ] || die "IMAGEDIR is not set"
[ -d "$IMAGEDIR" ] || die "IMAGEDIR $IMAGEDIR is not a directory"

# The packer: OTAPACK, else the SDK's tool when it is ours (or our drop-in launcher), else PATH.
sdk_tool=$PROJ_ROOT/image/makefiletools/bin/otapack
if [ -n "$OTAPACK" ]; then
    read -r -a ota <<< "$OTAPACK"
    is_ours "${ota[0]}" || die "OTAPACK=$OTAPACK is not sstarota's otapack (its --version does not say so)"
elif is_ours "$sdk_tool"; then
    ota=("$sdk_tool")
elif is_ours "$(command -v otapack || true)"; then
    ota=("$(command -v otapack)")
else
    die "no sstarota otapack: $sdk_tool is not sstarota's and neither is otapack on PATH ($(command -v otapack || echo none)); pip install sstarota, or set OTAPACK"
fi
# What -c does without --format/--tool-id: SSTAROTA_FORMAT/SSTAROTA_TOOL_ID, or a drop-in launcher's.
version=$("${ota[@]}" --version)
packer_format=$(sed -n 's/^-c format: \([0-9.]*\) (SSTAROTA_FORMAT)$/\1/p' <<< "$version")
packer_tool_id=$(sed -n 's/^-c tool id: \(.*\) (SSTAROTA_TOOL_ID)$/\1/p' <<< "$version")
# What the SDK's vendor binary is (or was, before a drop-in): its version and commit.
banner=$(vendor_banner "$sdk_tool")
[ -n "$banner" ] || banner=$(vendor_banner "$sdk_tool.vendor")
vendor_version=${banner%% *}
vendor_commit=${banner#* }

fmt=$OTA_FORMAT
[ -n "$fmt" ] || fmt=$packer_format
[ -n "$fmt" ] || fmt=$vendor_version
[ -n "$fmt" ] || fmt=0.4
case "$fmt" in 0.3|0.4|1.6) ;; *) die "OTA_FORMAT=$fmt: use 0.4 (2021 trees) or 1.6 (2025 trees), or 0.3" ;; esac
tool_id=$OTA_TOOL_ID
if [ -z "$tool_id" ] && [ -z "$packer_tool_id" ] && [ "$vendor_version" = 1.6 ] && [ -n "$vendor_commit" ]; then
    tool_id=$vendor_commit
fi
[ -n "$SSTAROTA_LIST" ] || die "OTA_IMAGE_LIST is empty: no partition to pack (it comes from the partition config)"
[ "$SSTAROTA_LIST" = "$(echo $SSTAROTA_LIST_AT_INCLUDE)" ] || die "OTA_IMAGE_LIST was '$SSTAROTA_LIST_AT_INCLUDE' where ota.mk was included and is '$SSTAROTA_LIST' now: include ota.mk after the partition config"
# a partition named twice is packed once, at its first place: the SDK's flow makes one target
# per partition, and make builds a prerequisite named twice once
seen=" "; once=; twice=
for p in $SSTAROTA_LIST; do
    case "$seen" in *" $p "*) twice="$twice $p" ;; *) seen="$seen$p "; once="$once $p" ;; esac
done
[ -z "$twice" ] || warn "OTA_IMAGE_LIST names$twice more than once: packed once, at the first place (as the SDK's flow does)"
SSTAROTA_LIST=$(echo $once)

PKG=$IMAGEDIR/SStarOta.bin
[ "$fmt" = 1.6 ] && LAYOUT=$IMAGEDIR/SStarOtaLayout.txt

image_for() { # part fstype -> $image (path) and $kind, or fails: the SDK ota.mk's rule for it
    local p=$1 fs=$2 f=
    kind=--block-update
    case "$fs" in
        "") case "$p" in
                ipl|ipl_cust|uboot)
                    if [ "$FLASH_TYPE" = sdmmc ]; then
                        case "$p" in ipl) f=boot/IPL ;; ipl_cust) f=boot/IPL_CUST ;; uboot) f=boot/UBOOT ;; esac
                        kind=--file-update
                    else
                        f=${p}_s.bin
                    fi ;;
                boot) f=boot.bin ;;
                logo|kernel) f=$p ;;
            esac ;;
        ramfs) [ "$p" != rootfs ] || f=rootfs.ramfs ;;
        squashfs) f=$p.sqfs ;;
        ubifs) f=$p.ubifs; kind=--ubi-update ;;
        jffs2|lfs|fwfs|ext4) f=$p.$fs ;;
    esac
    pvar "$p" otaimg
    [ -z "$val" ] || f=$val
    [ -n "$f" ] || return 1
    case "$f" in /*) image=$f ;; *) image=$IMAGEDIR/$f ;; esac
}

env_04() { # part -> $env_sh: the 2021 flow's script from <part>_blkenv (shell text for `echo -e`,
    # each line becomes a fw_setenv call), or empty
    pvar "$1" blkenv
    env_sh=
    eval "[ -n \"$val\" ]" || return 0
    env_sh=$IMAGEDIR/${1}_otaenv.sh
    rm -f "$env_sh"  # a fresh file: its mode (stored in the record) comes from the umask
    eval "echo -e \"$val\"" | sed 's/^/\/etc\/fw_setenv /g' > "$env_sh"
}
env_kernel_16() { # -> $env_sh: the 2025 spinand flow's kernel_otaenv.sh (printf %x of the kernel's size)
    local ksize
    ksize=$(wc -c < "$IMAGEDIR/kernel")
    env_sh=$IMAGEDIR/kernel_otaenv.sh
    rm -f "$env_sh"
    printf '/etc/fw_setenv kernel_file_size %x\n/etc/fw_setenv recovery_file_size  %x\n' "$ksize" "$ksize" > "$env_sh"
}

# Check the whole config first: a bad one fails before anything is written.
for p in $SSTAROTA_LIST; do
    case "$p" in *[!A-Za-z0-9_]*) die "partition name '$p' in OTA_IMAGE_LIST: letters, digits and _ only" ;; esac
    pvar "$p" otablk; [ -n "${val// }" ] || die "partition '$p' is in OTA_IMAGE_LIST but ${p}_otablk is not set (the target device or path)"
    pvar "$p" patsize; [ -n "${val// }" ] || die "partition '$p': ${p}_patsize is not set (the partition size, -t)"
    size=$(echo $val)
    if ! [[ "$size" =~ ^(0[xX][0-9a-fA-F]+|[0-9]+)$ ]] || [ $((size)) -eq 0 ]; then
        die "partition '$p': ${p}_patsize is '$size', not a partition size (hex with 0x or decimal, above 0); a size computed in the config with \$[...] needs bash (ota.mk runs make's \$(shell ...) with SHELL=/bin/bash)"
    fi
    pvar "$p" fstype; fs=${val// }
    image_for "$p" "$fs" || die "partition '$p' (fstype '${fs}'): the SDK flow has no image for it (raw: ipl ipl_cust uboot boot logo kernel, rootfs ramfs; or a squashfs ubifs jffs2 lfs fwfs ext4 fstype); set ${p}_otaimg to its file under IMAGEDIR"
done
if [ -n "${SSTAROTA_INCREMENTAL_BASE-}" ]; then
    # ota_images_incremental: every partition of OTA_IMAGE_LIST, against the images in OTA_BASE
    base=$SSTAROTA_INCREMENTAL_BASE
    [ -d "$base" ] || die "OTA_BASE=$base is not a directory (give the old build's output/images)"
    cfg=$IMAGEDIR/SStarOtaPartitions.mk
    { echo "OTA_IMAGE_LIST = $SSTAROTA_LIST"
      for p in $SSTAROTA_LIST; do
          pvar "$p" fstype; fs=${val// }; image_for "$p" "$fs"
          for v in otablk patsize fstype otamask; do pvar "$p" $v; echo "${p}_$v = $(echo $val)"; done
          echo "${p}_otaimg = ${image#"$IMAGEDIR"/}"
          # the env script the full flow adds after the partition, added when it is packed
          if [ "$fmt" != 1.6 ]; then
              env_04 "$p"
          elif [ "$p" = kernel ] && [ -z "$fs" ] && [ "$FLASH_TYPE" = spinand ] && [ -f "$IMAGEDIR/kernel" ]; then
              env_kernel_16
          else
              env_sh=
          fi
          [ -z "$env_sh" ] || echo "${p}_otaenv = $env_sh"
      done; } > "$cfg"
    inc=(-c "$PKG" --incremental "$base" "$IMAGEDIR" --config "$cfg" --format "$fmt"
         --patch-threshold "${OTA_PATCH_THRESHOLD:-0.95}")
    [ "$fmt" != 1.6 ] || [ -z "$tool_id" ] || inc+=(--tool-id "$tool_id")
    [ -z "$OTA_START_SCRIPT" ] || inc+=(-b "$OTA_START_SCRIPT")
    [ -z "$OTA_END_SCRIPT" ] || inc+=(-e "$OTA_END_SCRIPT")
    [ -z "$OTA_SIGN_KEY" ] || [ -f "$OTA_SIGN_KEY" ] || die "OTA_SIGN_KEY '$OTA_SIGN_KEY' not found"
    [ -z "$OTA_SIGN_KEY" ] || inc+=(--sign "$OTA_SIGN_KEY")
    [ -z "$OTA_COMPATIBLE" ] || inc+=(--compatible "$OTA_COMPATIBLE")
    [ -z "$OTA_FW_VERSION" ] || inc+=(--fw-version "$OTA_FW_VERSION")
    rm -f "$PKG" "$PKG.gz"
    "${ota[@]}" "${inc[@]}" | tee "$IMAGEDIR/SStarOtaIncremental.txt"
    rm -f "$cfg"
    echo "$prog: $PKG.gz ($fmt, incremental from $base)"
    exit 0
fi
if [ -n "$OTA_PARTS" ] && [ "$OTA_PARTS" != all ]; then
    for want in $OTA_PARTS; do
        case " $SSTAROTA_LIST " in *" $want "*) ;; *) die "OTA_PARTS names '$want', which is not in OTA_IMAGE_LIST ($SSTAROTA_LIST)" ;; esac
    done
fi

interactive=yes
[ -n "$OTA_PARTS" ] && interactive=no
asked=0
ask() { # PROMPT -> $answer; the answer is echoed when it comes from a pipe, so logs read well
    printf '%s' "$1"
    answer=
    if ! read answer; then
        [ $asked -gt 0 ] || { echo; die "no answers on stdin: answer the questions, or set OTA_PARTS (and OTA_START_SCRIPT, OTA_END_SCRIPT) for a non-interactive build"; }
    fi
    asked=$((asked + 1))
    [ -t 0 ] || printf '%s\n' "$answer"
}
selected() { # part -> 0 when it is to be packed
    if [ "$interactive" = yes ]; then
        ask "Make $1 ?(yes/no)"
        [ "$answer" = yes ] || [ "$answer" = y ]
        return
    fi
    [ "$OTA_PARTS" = all ] && return 0
    case " $(echo $OTA_PARTS) " in *" $1 "*) return 0 ;; esac
    return 1
}

if [ "$interactive" = yes ]; then
    ask "Start scripts:"; start=$answer
    ask "End scripts:"; end=$answer
else
    start=$OTA_START_SCRIPT
    end=$OTA_END_SCRIPT
fi
create=(-c "$PKG")
if [ -n "$start" ]; then [ -f "$start" ] || die "start script '$start' not found"; create+=(-b "$start"); fi
if [ -n "$end" ]; then [ -f "$end" ] || die "end script '$end' not found"; create+=(-e "$end"); fi
create+=(--format "$fmt")
[ "$fmt" != 1.6 ] || [ -z "$tool_id" ] || create+=(--tool-id "$tool_id")
[ -z "$OTA_MANIFEST" ] || [ "$OTA_MANIFEST" = 0 ] || create+=(--manifest)
[ -z "$OTA_SIGN_KEY" ] || [ -f "$OTA_SIGN_KEY" ] || die "OTA_SIGN_KEY '$OTA_SIGN_KEY' not found"
[ -z "$OTA_SIGN_KEY" ] || create+=(--manifest)  # deltas' sources are named from the start
[ -z "$OTA_COMPATIBLE" ] || create+=(--compatible "$OTA_COMPATIBLE")
[ -z "$OTA_FW_VERSION" ] || create+=(--fw-version "$OTA_FW_VERSION")
rm -f "$PKG" "$PKG.gz"
[ -z "$LAYOUT" ] || rm -f "$LAYOUT"
"${ota[@]}" "${create[@]}"

for p in $SSTAROTA_LIST; do
    pvar "$p" otablk; targets=$val
    pvar "$p" patsize; size=$(echo $val)
    pvar "$p" fstype; fs=${val// }
    image_for "$p" "$fs"
    packed=no
    if selected "$p"; then
        packed=yes
        [ -f "$image" ] || die "partition '$p': image $image not found (build it first, or set ${p}_otaimg)"
        if [ "$fmt" = 1.6 ]; then
            pvar "$p" otamask
            "${ota[@]}" -s "$image" -d "$targets" -t "$size" --default-mask "$val" -m 0 $kind -l "$p" -a "$PKG"
        else
            for target in $targets; do
                "${ota[@]}" -s "$image" -d "$target" -t "$size" -m 0 $kind -a "$PKG"
            done
            env_04 "$p"
            [ -z "$env_sh" ] || "${ota[@]}" -s "$env_sh" -d "${p}_otaenv.sh" --script-add -a "$PKG"
        fi
    fi
    if [ "$fmt" = 1.6 ] && [ "$p" = kernel ] && [ -z "$fs" ] && [ "$FLASH_TYPE" = spinand ]; then
        # 2025 flow on spinand: kernel_otaenv.sh after the kernel rule, whether or not the
        # kernel was packed, with the size of the kernel image in IMAGEDIR (printf %x, no 0x)
        [ -f "$IMAGEDIR/kernel" ] || die "$IMAGEDIR/kernel not found: the 1.6 spinand flow writes its size into kernel_otaenv.sh"
        [ "$packed" = yes ] || warn "kernel is not packed, but kernel_otaenv.sh is (as the vendor's 2025 flow does): it sets kernel_file_size to the size of $IMAGEDIR/kernel"
        env_kernel_16
        "${ota[@]}" -s "$env_sh" -d kernel_otaenv.sh -l kernel_otaenv.sh --script-add -a "$PKG"
    fi
done

for p in $SSTAROTA_LIST; do
    if [ "$fmt" = 1.6 ]; then
        pvar "$p" blkenv; [ -z "${val// }" ] || warn "${p}_blkenv is not used by the 2025 (1.6) flow"
    else
        pvar "$p" otamask; [ -z "${val// }" ] || warn "${p}_otamask is for the 1.6 format; OTA_FORMAT=$fmt ignores it"
    fi
done
[ -z "$OTA_SIGN_KEY" ] || "${ota[@]}" -a "$PKG" --sign "$OTA_SIGN_KEY"
[ -z "$LAYOUT" ] || "${ota[@]}" --out-layout "$LAYOUT" -r "$PKG"
"${ota[@]}" --gzip "$PKG"
echo "$prog: $PKG.gz ($fmt)"
endef

# Every partition setting reaches the recipe as an environment variable, expanded by make
# exactly as the SDK's recipe expands $($(part)$(BLKENV)).
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_otablk = $$($(p)$$(OTABLK))))
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_patsize = $$($(p)$$(PATSIZE))))
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_fstype = $$($(p)$$(FSTYPE))))
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_blkenv = $$($(p)$$(BLKENV))))
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_otamask = $$($(p)$$(OTAMASK))))
$(foreach p,$(OTA_IMAGE_LIST),$(eval ota_images: export SSTAROTA_P_$(p)_otaimg = $$($(p)_otaimg)))

# ota_images_incremental (or image-ota-incremental) OTA_BASE=<the old build's output/images>:
# SStarOta.bin.gz holding only what changed from those images (see otapack --incremental),
# and its size report in SStarOtaIncremental.txt. OTA_PATCH_THRESHOLD: default 0.95.
.PHONY: ota_images ota_images_incremental image-ota-incremental
# bash, whatever /bin/sh is: the recipe is bash, and ALKAID configs compute sizes with $(call ...)
# helpers whose $(shell ...) use bash's $[...] (under dash they evaluate to 0 or nothing)
ota_images ota_images_incremental image-ota-incremental: SHELL := /bin/bash
# Paths reach the shell through the environment only, never pasted into a command line.
ota_images_incremental image-ota-incremental: export SSTAROTA_OTA_BASE = $(value OTA_BASE)
ota_images_incremental image-ota-incremental: export SSTAROTA_MAKEFILE = $(value sstarota_makefile)
ota_images_incremental image-ota-incremental:
	@[ -n "$$SSTAROTA_OTA_BASE" ] || { echo "$@: error: set OTA_BASE=<the old build's output/images>" >&2; exit 2; }
	@case "$$SSTAROTA_OTA_BASE" in /*) b=$$SSTAROTA_OTA_BASE ;; *) b=$$PWD/$$SSTAROTA_OTA_BASE ;; esac; \
	SSTAROTA_INCREMENTAL_BASE=$$b $(MAKE) --no-print-directory -f "$$SSTAROTA_MAKEFILE" ota_images
ota_images: export SSTAROTA_INCREMENTAL_BASE := $(value SSTAROTA_INCREMENTAL_BASE)
ota_images: export OTA_PATCH_THRESHOLD := $(OTA_PATCH_THRESHOLD)
ota_images: export SSTAROTA_OTA_IMAGES_SH = $(value sstarota_ota_images_sh)
ota_images: export SSTAROTA_LIST = $(OTA_IMAGE_LIST)
ota_images: export SSTAROTA_LIST_AT_INCLUDE := $(OTA_IMAGE_LIST)
ota_images: export IMAGEDIR := $(IMAGEDIR)
ota_images: export PROJ_ROOT := $(PROJ_ROOT)
ota_images: export FLASH_TYPE := $(FLASH_TYPE)
ota_images: export OTAPACK := $(OTAPACK)
ota_images: export OTA_FORMAT := $(OTA_FORMAT)
ota_images: export OTA_TOOL_ID := $(OTA_TOOL_ID)
ota_images: export OTA_MANIFEST := $(OTA_MANIFEST)
ota_images: export OTA_SIGN_KEY := $(OTA_SIGN_KEY)
ota_images: export OTA_COMPATIBLE := $(OTA_COMPATIBLE)
ota_images: export OTA_FW_VERSION := $(OTA_FW_VERSION)
ota_images: export OTA_PARTS := $(OTA_PARTS)
ota_images: export OTA_START_SCRIPT := $(OTA_START_SCRIPT)
ota_images: export OTA_END_SCRIPT := $(OTA_END_SCRIPT)
ota_images:
	@bash -c "$$SSTAROTA_OTA_IMAGES_SH" ota_images
