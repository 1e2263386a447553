#!/bin/sh
# sstarota: the recipe behind mk/ota.mk's ota_images target (POSIX sh).
# Arguments: one per partition, "name|targets|size|fstype|blkenv|mask|image".
# Environment: OTAPACK IMAGEDIR OTA_FORMAT OTA_MANIFEST OTA_PARTS OTA_START_SCRIPT OTA_END_SCRIPT
set -e

die() {
    echo "ota_images: error: $*" >&2
    [ -n "$PKG" ] && rm -f "$PKG"  # never leave a half-made package behind
    exit 2
}
PKG=

[ -n "$IMAGEDIR" ] || die "IMAGEDIR is not set"
[ -d "$IMAGEDIR" ] || die "IMAGEDIR $IMAGEDIR is not a directory"
case "$OTA_FORMAT" in 0.3|0.4|1.6) ;; *) die "OTA_FORMAT=$OTA_FORMAT: use 0.4 or 1.6 (or 0.3)" ;; esac
PKG="$IMAGEDIR/SStarOta.bin"

# Interactive unless OTA_PARTS says what to pack.
interactive=yes
[ -n "$OTA_PARTS" ] && interactive=no

ask() { # ask PROMPT -> $answer (empty at end of input)
    printf '%s' "$1"
    answer=
    read -r answer || true
}

# Check every partition first: a bad config fails before anything is written.
for spec in "$@"; do
    name=${spec%%|*}
    rest=${spec#*|}; targets=${rest%%|*}
    [ -n "$targets" ] || die "partition '$name' is in OTA_IMAGE_LIST but ${name}_otablk is not set (the target device or path)"
done

if [ "$interactive" = yes ]; then
    ask "Start scripts:"; start=$answer
    ask "End scripts:"; end=$answer
else
    start=$OTA_START_SCRIPT
    end=$OTA_END_SCRIPT
fi
create="-c $PKG"
[ -n "$start" ] && { [ -f "$start" ] || die "start script '$start' not found"; create="$create -b $start"; }
[ -n "$end" ] && { [ -f "$end" ] || die "end script '$end' not found"; create="$create -e $end"; }
[ "$OTA_FORMAT" != 0.4 ] && create="$create --format $OTA_FORMAT"
[ -n "$OTA_MANIFEST" ] && [ "$OTA_MANIFEST" != 0 ] && create="$create --manifest"
rm -f "$PKG" "$PKG.gz"
# shellcheck disable=SC2086
$OTAPACK $create

image_for() { # name fstype override -> path of the partition's image
    if [ -n "$3" ]; then echo "$IMAGEDIR/$3"; return; fi
    case "$2" in
        squashfs) echo "$IMAGEDIR/$1.sqfs" ;;
        ubifs) echo "$IMAGEDIR/$1.ubifs" ;;
        jffs2) echo "$IMAGEDIR/$1.jffs2" ;;
        ext4) echo "$IMAGEDIR/$1.ext4" ;;
        lfs) echo "$IMAGEDIR/$1.lfs" ;;
        fwfs) echo "$IMAGEDIR/$1.fwfs" ;;
        ramfs) echo "$IMAGEDIR/$1.ramfs" ;;
        *) for f in "$IMAGEDIR/$1" "$IMAGEDIR/$1.bin" "$IMAGEDIR/${1}_s.bin"; do
               [ -f "$f" ] && { echo "$f"; return; }
           done
           echo "$IMAGEDIR/$1" ;;
    esac
}

kind_for() { # fstype first-target -> otapack operation
    case "$1" in ubifs) echo --ubi-update; return ;; esac
    case "$2" in /dev/*) echo --block-update ;; *) echo --file-update ;; esac
}

selected() { # name -> 0 if the partition is to be packed
    if [ "$interactive" = yes ]; then
        ask "Make $1 ?(yes/no)"
        case "$answer" in yes|y|YES|Y) return 0 ;; *) return 1 ;; esac
    fi
    [ "$OTA_PARTS" = all ] && return 0
    for p in $OTA_PARTS; do [ "$p" = "$1" ] && return 0; done
    return 1
}

if [ "$interactive" = no ] && [ "$OTA_PARTS" != all ]; then
    for p in $OTA_PARTS; do
        found=no
        for spec in "$@"; do [ "${spec%%|*}" = "$p" ] && found=yes; done
        [ "$found" = yes ] || die "OTA_PARTS names '$p', which is not in OTA_IMAGE_LIST"
    done
fi

for spec in "$@"; do
    IFS='|' read -r name targets size fstype blkenv mask img <<EOS
$spec
EOS
    selected "$name" || continue
    image=$(image_for "$name" "$fstype" "$img")
    [ -f "$image" ] || die "partition '$name': image $image not found (build it first, or set ${name}_otaimg)"
    set -- $targets
    kind=$(kind_for "$fstype" "$1")
    sizeopt=
    [ -n "$size" ] && sizeopt="-t $size"
    if [ "$OTA_FORMAT" = 1.6 ]; then
        if [ -n "$mask" ]; then
            $OTAPACK -s "$image" -d "$targets" $sizeopt -m 0 $kind --default-mask "$mask" -l "$name" -a "$PKG"
        else
            $OTAPACK -s "$image" -d "$targets" $sizeopt -m 0 $kind -l "$name" -a "$PKG"
        fi
    else
        for target in $targets; do
            $OTAPACK -s "$image" -d "$target" $sizeopt -m 0 $kind -a "$PKG"
        done
    fi
    if [ -n "$blkenv" ]; then
        env_script="$IMAGEDIR/${name}_otaenv.sh"
        : > "$env_script"
        for setting in $blkenv; do
            echo "/etc/fw_setenv ${setting%%=*} ${setting#*=}" >> "$env_script"
        done
        chmod 755 "$env_script"
        $OTAPACK -s "$env_script" -d "${name}_otaenv.sh" --script-add -a "$PKG"
    fi
done

if [ "$OTA_FORMAT" = 1.6 ]; then
    $OTAPACK --out-layout "$IMAGEDIR/SStarOta.layout.txt" -r "$PKG"
fi
$OTAPACK --gzip "$PKG"
echo "ota_images: $PKG.gz"
