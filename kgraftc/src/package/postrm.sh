#!/bin/sh
set -e
case "$1" in
    remove | purge)
        [ -n "${DPKG_ROOT:-}" ] || depmod -a @RELEASE@ 2>/dev/null || true
        rm -f "${DPKG_ROOT:-}/var/lib/kgraft/@PKG@" "${DPKG_ROOT:-}/var/lib/kgraft/@PKG@.ko"
        ;;
esac
