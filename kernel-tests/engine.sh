#!/bin/sh
# Runs the engine tests: kgraft's own engine in the kernel (`kgraftc build --engine kgraft`),
# with the livepatch core next to it for the refusals and the benchmark. Builds the test module,
# the samples with both engines, packs an initramfs with engine-init.sh as /init, boots the
# installed Debian kernel under qemu and reads the verdicts. Installs nothing.
#
# Usage: kernel-tests/engine.sh [WORK_DIR]   (default: target/kernel-tests-engine)
# Environment: KDIR, KGRAFTC, QEMU_TIMEOUT (s), as for run.sh. KDIR may be a kernel of the fleet
# (target/kernels/RELEASE/build, scripts/setup.sh kernels): it boots with its image.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=${1:-$root/target/kernel-tests-engine}
mkdir -p "$work"
work=$(cd "$work" && pwd)
say() { echo "kernel-tests (engine): $*" >&2; }

. "$here/lib.sh"
harness_setup gcc make pahole strip ldd

rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/m/kgraft" "$rootfs/m/klp" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp" "$rootfs/dev"

build_testmod

mkdir -p "$work/src"
build() { # engine, sample
    src=$root/patches/$2.kgp
    [ -e "$src" ] || src=$here/patches/$2.kgp
    # The samples name the 6.1 kernels they were written for (`kernel: "GLOB"`); for another
    # kernel of the fleet their copies leave the line out, as nolp.sh's do.
    glob=$(sed -n 's/^ *kernel: "\(.*\)",*$/\1/p' "$src")
    # shellcheck disable=SC2254 # the glob is a pattern
    case "$release" in
        $glob) ;;
        *) grep -v '^ *kernel: "' "$src" > "$work/src/$2.kgp"; src=$work/src/$2.kgp ;;
    esac
    say "building $2 ($1)"
    "$KGRAFTC" build --target linux --engine "$1" --kdir "$KDIR" --module "$testmod" \
        -o "$rootfs/m/$1/$2.ko" "$src" > "$work/$2.$1.build.log" 2>&1 \
        || { cat "$work/$2.$1.build.log" >&2; say "building $2 ($1) failed"; exit 1; }
}
for p in cmdline_banner shadow_counter pair_v2 pair_encode_only pair_decode_only bench_target nap_short c_banner \
    refuse_pre_patch getpriority_syscall object_callbacks pair_v3; do
    build kgraft $p
done
for p in cmdline_banner bench_target; do
    build klp $p
done

gcc -static -O2 -Wall -o "$rootfs/bin/kgt" "$here/tool/kgt.c"
for bits in 32 64; do
    gcc -m$bits -Os -nostdlib -static -ffreestanding -fno-pic -fno-pie -no-pie -fno-stack-protector -Wall \
        -o "$rootfs/bin/prio$bits" "$here/tool/prio32.c"
done
# kgraftc itself, for `kgraftc kernel`.
host_program "$KGRAFTC" kgraftc strip
pack_busybox
cp "$here/guest.sh" "$rootfs/guest.sh"
echo kgraft > "$rootfs/engine"
pack_initramfs "$here/engine-init.sh"

say "booting $release under qemu"
boot_guest "${QEMU_TIMEOUT:-600}"
grep -E '^(KGRAFT-|stragglers|insmod|rmmod|kgt:)' "$work/console.txt" || true
grep -q '^KGRAFT-DONE failed: none' "$work/console.txt" || { say "FAILED (console: $work/console.txt)"; exit 1; }
say "all engine scenarios passed"
