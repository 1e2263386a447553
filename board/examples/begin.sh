#!/bin/sh
# Example begin script: runs after the package has been verified, before anything is
# written. A non-zero exit stops the update (nothing written; the end script then runs
# with OTA_STATUS=-1). It runs again when the same package is installed again after an
# interruption, so, like the end script, it must be idempotent (this one is).
echo "ota begin: $(date)"
# Refuse to update on low battery, on a board that reports it:
if [ -r /sys/class/power_supply/battery/capacity ] && [ "$(cat /sys/class/power_supply/battery/capacity)" -lt 20 ]; then
    echo "ota begin: battery below 20%, not updating"
    exit 1
fi
# Give the writers the memory back.
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
exit 0
