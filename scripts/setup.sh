#!/usr/bin/env bash
# Installs what kgraft needs on a fresh Debian 12 machine. Safe to run again: it skips what is there.
#
#   scripts/setup.sh host   the user-mode host only: a C compiler (the demo)
#   scripts/setup.sh all    also the Linux kernel target and its qemu harness, and mdBook (the tests)
set -euo pipefail

what=${1:-all}
case "$what" in host | all) ;; *) echo "usage: scripts/setup.sh [host|all]" >&2; exit 2 ;; esac

# pahole (dwarves) gives the host's C its BTF, which kgraftc reads like a kernel's.
need=(gcc libc6-dev make binutils dwarves)
if [ "$what" = all ]; then
    # The kernel target: Debian's 6.1 kernel and its headers (kbuild), qemu and a busybox
    # initramfs for the harness, and the Rust compiler with library source that builds `core`
    # for the kernel (see the book's "Patching a real kernel"); the kernel's source, for the
    # C-body patch that includes fs/proc/internal.h; openssl for the throwaway key the signing
    # test makes, rpm for `kgraftc package --format rpm` (rpmbuild); procps's sysctl, which
    # upstream's livepatch selftests use in the guest (kernel-tests/selftests.sh); what a kernel
    # build needs (flex, bison, bc, libelf-dev for objtool, xz-utils for the tarball), for the
    # small kernel without the livepatch core that kernel-tests/nolp.sh builds from that source.
    need+=(linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static cpio kmod
           rustc-web rust-web-src linux-source-6.1 openssl rpm procps flex bison bc libelf-dev xz-utils)
fi

missing=()
for pkg in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install a Rust toolchain (1.89 or newer) first" >&2
    exit 1
fi

if [ "$what" = all ]; then
    # The tests check formatting and lints with the toolchain's own components.
    for tool in fmt clippy; do
        cargo $tool --version >/dev/null 2>&1 || {
            echo "setup: cargo $tool is missing; add it to the Rust toolchain (rustup component add ${tool/fmt/rustfmt})" >&2
            exit 1
        }
    done
fi

if [ "$what" = all ] && ! command -v mdbook >/dev/null; then
    echo "setup: installing mdbook" >&2
    cargo install --quiet --locked mdbook --version 0.4.52
fi
