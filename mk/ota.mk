# sstarota: a drop-in for ALKAID's project/image/ota.mk that drives sstarota's otapack.
#
# Same target (ota_images), same variables, same prompts, same output as the SDK's own:
#   OTA_IMAGE_LIST              partitions offered (from the partition config)
#   <part>$(OTABLK)             target(s), space separated          (e.g. kernel_otablk)
#   <part>$(PATSIZE)            partition size, hex                 (kernel_patsize)
#   <part>$(FSTYPE)             squashfs ubifs jffs2 ext4 lfs fwfs ramfs, or empty for raw
#   <part>$(BLKENV)             u-boot env settings NAME=VALUE ...  -> <part>_otaenv.sh
#   <part>$(OTAMASK)            1.6 write masks, e.g. "1 0"
#   <part>_otaimg               optional: the image file name, when not the default
# Output: $(IMAGEDIR)/SStarOta.bin.gz (and SStarOta.layout.txt with OTA_FORMAT=1.6).
#
# Non-interactive (CI builds): set OTA_PARTS to the partitions to pack, or "all";
# OTA_START_SCRIPT / OTA_END_SCRIPT give the scripts (empty: none).
# OTA_FORMAT=0.4 (default; one record per target) or 1.6 (one record per partition with
# all its targets, masks and a label); OTA_MANIFEST=1 adds sstarota's manifest;
# OTAPACK names the packer (default: otapack on PATH).

OTABLK ?= _otablk
PATSIZE ?= _patsize
FSTYPE ?= _fstype
BLKENV ?= _blkenv
OTAMASK ?= _otamask
IMAGEDIR ?= $(CURDIR)/../output/images
OTAPACK ?= otapack
OTA_FORMAT ?= 0.4
OTA_MANIFEST ?=
OTA_PARTS ?=
OTA_START_SCRIPT ?=
OTA_END_SCRIPT ?=

SSTAROTA_MK_DIR := $(dir $(lastword $(MAKEFILE_LIST)))

# One argument per partition: name|targets|size|fstype|blkenv|mask|image (fields may be empty)
ota_part_args = $(foreach p,$(OTA_IMAGE_LIST),'$(p)|$(strip $($(p)$(OTABLK)))|$(strip $($(p)$(PATSIZE)))|$(strip $($(p)$(FSTYPE)))|$(strip $($(p)$(BLKENV)))|$(strip $($(p)$(OTAMASK)))|$(strip $($(p)_otaimg))')

.PHONY: ota_images
ota_images:
	@OTAPACK='$(OTAPACK)' IMAGEDIR='$(IMAGEDIR)' OTA_FORMAT='$(OTA_FORMAT)' OTA_MANIFEST='$(OTA_MANIFEST)' \
	OTA_PARTS='$(OTA_PARTS)' OTA_START_SCRIPT='$(OTA_START_SCRIPT)' OTA_END_SCRIPT='$(OTA_END_SCRIPT)' \
	sh $(SSTAROTA_MK_DIR)ota-images.sh $(ota_part_args)
