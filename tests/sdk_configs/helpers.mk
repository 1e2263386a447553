# What an ALKAID project/image makefile defines before it includes a partition config, written
# here for the tests (not the SDK's text): the setting suffixes, and size helpers in the style
# of its definitions.mk, whose $(shell ...) use bash's $[...] arithmetic as the SDK's do.
RESOUCE := _resouce
RESOURCE := _resource
FSTYPE := _fstype
PATSIZE := _patsize
DATASIZE := _datasize
COPIES := _copies
BKCOUNT := _bkcount
PATCOUNT := _patcount
PGSIZE := _pgsize
MTDPART := _mtdpart
BOOTTAB := _boottab
BOOTTAB0 := _boottab0
BOOTTAB1 := _boottab1
SYSTAB := _systab
OTABLK := _otablk
BLKENV := _blkenv
OTAMASK := _otamask

# the size of a file (0x0 when it is missing), hex
define filesize
$(shell printf 0x%x $$(if [ -f $(1) ]; then stat -Lc %s $(1); else echo 0; fi))
endef
# the sum of the numbers in $(1), hex
define sum
$(shell v=0; for n in $(1); do v=$$[v+n]; done; printf 0x%x $$v)
endef
define multiplyhex
$(shell printf 0x%x $$[$(1)*$(2)])
endef
# $(1) rounded up to a multiple of $(2) (a power of two)
define alignup
$(shell printf 0x%x $$[($(1)+$(2)-1)&~($(2)-1)])
endef
define max
$(shell if [ $$[$(1)] -gt $$[$(2)] ]; then printf 0x%x $$[$(1)]; else printf 0x%x $$[$(2)]; fi)
endef
