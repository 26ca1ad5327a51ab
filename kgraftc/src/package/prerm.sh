#!/bin/sh
set -e
# On upgrade the new version's postinst replaces the patch; only removal unloads it.
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ]; then
    @HELPER@ unload
fi
