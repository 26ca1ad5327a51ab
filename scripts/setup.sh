#!/usr/bin/env bash
# Installs what kgraft needs on a fresh Debian 12 machine. Safe to run again: it skips what is there.
#
#   scripts/setup.sh host      the user-mode host only: a C compiler (the demo)
#   scripts/setup.sh all       also the Linux kernel target and its qemu harness, mdBook, and the
#                              fleet's other kernels (the tests)
#   scripts/setup.sh kernels   the fleet's other kernels only, under target/kernels (see below)
set -euo pipefail

what=${1:-all}
case "$what" in host | all | kernels) ;; *) echo "usage: scripts/setup.sh [host|all|kernels]" >&2; exit 2 ;; esac

# The fleet's other kernels, beside the installed one: Debian 12's 6.1 PREEMPT_RT and cloud
# flavours of the installed ABI, and the newest 6.12 of bookworm's security archive. Each is
# unpacked from its packages (image, headers, kbuild) into target/kernels/RELEASE/root, with no
# change to the machine's packages, boot entries or apt sources; target/kernels/RELEASE/build is
# its build directory, target/kernels/RELEASE/vmlinuz its image, target/kernels/RELEASE/kernel its
# modules (the layout of /lib/modules/RELEASE, which kgraftc looks for beside --kdir).
fleet_kernels() {
    local here dir abi r latest
    here="$(cd "$(dirname "$0")/.." && pwd)"
    dir="$here/target/kernels"
    abi="$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | grep -o '6\.1\.0-[0-9]*' | head -n 1)"
    [ -n "$abi" ] || { echo "setup: linux-image-amd64 is not installed: run scripts/setup.sh all" >&2; exit 1; }
    # Package lists that do not know the flavours yet (never updated, or cleaned) are updated once.
    if ! apt-cache show "linux-image-$abi-rt-amd64-unsigned" > /dev/null 2>&1; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        echo "setup: updating the package lists for the fleet's kernels" >&2
        $sudo apt-get update -qq
    fi
    latest="$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' | cut -d' ' -f1 |
        sed 's/^linux-image-//; s/-unsigned$//' | sort -V | tail -n 1)"
    local releases=("$abi-rt-amd64" "$abi-cloud-amd64")
    if [ -n "$latest" ]; then releases+=("$latest"); else echo "setup: no 6.12 kernel in the apt sources" >&2; fi
    for r in "${releases[@]}"; do
        [ -e "$dir/$r/build/include/config/kernel.release" ] && [ -e "$dir/$r/vmlinuz" ] && continue
        echo "setup: unpacking the kernel $r into target/kernels/$r" >&2
        rm -rf "${dir:?}/$r"
        mkdir -p "$dir/$r/debs" "$dir/$r/root"
        # The headers' own dependencies: the common headers and kbuild of that version.
        local pkgs=("linux-image-$r-unsigned" "linux-headers-$r")
        mapfile -t -O "${#pkgs[@]}" pkgs < <(apt-cache depends "linux-headers-$r" |
            sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p')
        (cd "$dir/$r/debs" && apt-get download -qq "${pkgs[@]}" 2>/dev/null) ||
            { echo "setup: cannot download ${pkgs[*]}" >&2; exit 1; }
        for deb in "$dir/$r/debs"/*.deb; do dpkg-deb -x "$deb" "$dir/$r/root"; done
        rm -rf "$dir/$r/debs"
        # The flavour's Makefile includes the common headers' by absolute path.
        sed -i "s#^include /usr/src/#include $dir/$r/root/usr/src/#" "$dir/$r/root/usr/src/linux-headers-$r/Makefile"
        ln -s "root/usr/src/linux-headers-$r" "$dir/$r/build"
        ln -s "root/boot/vmlinuz-$r" "$dir/$r/vmlinuz"
        ln -s "root/lib/modules/$r/kernel" "$dir/$r/kernel"
    done
}
if [ "$what" = kernels ]; then
    fleet_kernels
    exit 0
fi

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
    # small kernel without the livepatch core that kernel-tests/nolp.sh builds from that source;
    # and the checker the test command runs on the project's shell scripts (shellcheck).
    need+=(linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static cpio kmod
           rustc-web rust-web-src linux-source-6.1 openssl rpm procps flex bison bc libelf-dev xz-utils
           shellcheck)
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

if [ "$what" = all ]; then
    fleet_kernels
fi
