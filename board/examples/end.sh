#!/bin/sh
# Example end script: runs after every update, successful or not. otaunpack puts
#   OTA_STATUS=0 (success) or OTA_STATUS=-1 (failure)
# in front of it, as the vendor's tool does. Records the result where the bootloader and
# the application can see it. It runs again when the same package is installed again after
# an interruption: a success leaves the same state however often it runs (the failure counter
# counts failed runs, on purpose).
state_dir="${OTA_ROOT:-}/var/lib/ota"
mkdir -p "$state_dir"
if [ "$OTA_STATUS" = 0 ]; then
    echo "ok $(date +%s)" > "$state_dir/result"
    rm -f "$state_dir/failures"
    [ -x /etc/fw_setenv ] && /etc/fw_setenv ota_result ok
    echo "ota end: update installed"
else
    echo "failed $(date +%s)" > "$state_dir/result"
    echo x >> "$state_dir/failures"
    [ -x /etc/fw_setenv ] && /etc/fw_setenv ota_result failed
    echo "ota end: update FAILED (OTA_STATUS=$OTA_STATUS); $(wc -l < "$state_dir/failures") failure(s) so far"
fi
exit 0
