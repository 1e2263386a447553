#!/bin/sh
# test helper for OTA_ON_FAILURE: record-failure.sh FILE CODE
echo "$2" > "$1"
