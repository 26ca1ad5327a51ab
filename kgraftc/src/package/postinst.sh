#!/bin/sh
set -e
# Another root (dpkg --root) leaves the running kernel alone.
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ]; then
    depmod -a @RELEASE@ 2>/dev/null || true
    [ -d /run/systemd/system ] && systemctl daemon-reload 2>/dev/null || true
    @HELPER@ load
fi
