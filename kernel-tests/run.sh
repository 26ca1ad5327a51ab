#!/bin/sh
# Runs the kernel tests: builds every sample patch (patches/*.kgp and kernel-tests/patches/*.kgp)
# with `kgraftc build --target linux`, the test module and helper, packs them with busybox into
# an initramfs, boots the installed Debian kernel under qemu (software emulation, with a
# timeout), which runs the scenarios listed in kernel-tests/scenarios, and reads the verdicts
# from the serial console. Installs nothing; see setup-notes.md for the packages it uses.
#
# Usage: kernel-tests/run.sh [WORK_DIR]   (default: target/kernel-tests)
# Environment: KDIR (kernel build directory), KGRAFTC (a built kgraftc), QEMU_TIMEOUT (s),
# KSRC (a kernel source tree for patches that include its internal headers; default: the
# headers needed, taken from Debian's linux-source-6.1 tarball under /usr/src), ENGINE (`klp`,
# the default, or `kgraft`: the samples are built with `--engine ENGINE`, and the scenarios
# marked `klp-only` in kernel-tests/scenarios are left out with the kgraft engine).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=${1:-$root/target/kernel-tests}
mkdir -p "$work"
work=$(cd "$work" && pwd)
say() { echo "kernel-tests: $*" >&2; }
now() { date +%s.%N; }
since() { echo "$(now) $1" | awk '{ printf "%.1f", $1 - $2 }'; }
start=$(now)

. "$here/lib.sh"
harness_setup gcc make modinfo pahole strip ldd dpkg-deb

rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/m" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp" "$rootfs/dev"

# from-diff reads Debian's source tarball itself.
tarball_src=$(ls /usr/src/linux-source-6.1.tar.xz 2>/dev/null | head -n 1)
[ -n "$tarball_src" ] || { say "no /usr/src/linux-source-6.1.tar.xz (apt-get install linux-source-6.1)"; exit 2; }
if [ -z "${KSRC:-}" ]; then
    # meminfo_string includes fs/proc/internal.h, as fs/proc/meminfo.c does; the upstream
    # livepatch samples are built from samples/livepatch.
    tarball=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || { say "no /usr/src/linux-source-6.1.tar.* (apt-get install linux-source-6.1), or set KSRC"; exit 2; }
    KSRC=$work/ksrc/linux-source-6.1
    if [ ! -e "$KSRC/fs/proc/internal.h" ] || [ ! -e "$KSRC/samples/livepatch/Makefile" ]; then
        say "unpacking fs/proc headers and the livepatch samples from $tarball"
        mkdir -p "$work/ksrc"
        tar xf "$tarball" -C "$work/ksrc" --wildcards 'linux-source-6.1/fs/proc/*.h' \
            'linux-source-6.1/samples/livepatch/*'
    fi
fi

times=$work/build-times
: > "$times"

# The test module first: the patches that target it are checked against its symbols and types.
build_testmod

# Upstream's livepatch samples, built from the kernel's source: the target module of the shadow
# samples (which the .kgp ports patch), and the C originals, whose kernel log the ports must
# reproduce. The C originals go under /m/c/, since they have the ports' module names.
say "building the upstream livepatch samples"
up=$work/upstream
rm -rf "$up"
mkdir -p "$up" "$rootfs/m/c"
for f in livepatch-shadow-mod livepatch-shadow-fix1 livepatch-shadow-fix2; do
    cp "$KSRC/samples/livepatch/$f.c" "$up/"
    echo "obj-m += $f.o" >> "$up/Kbuild"
done
make -s -C "$KDIR" M="$up" modules > "$work/upstream.log" 2>&1 || { cat "$work/upstream.log" >&2; exit 1; }
pahole -J --btf_base "$work/vmlinux.btf" "$up/livepatch-shadow-mod.ko" || { say "pahole could not add BTF to livepatch-shadow-mod"; exit 1; }
cp "$up/livepatch-shadow-mod.ko" "$rootfs/m/livepatch_shadow_mod.ko"
cp "$up/livepatch-shadow-fix1.ko" "$rootfs/m/c/livepatch_shadow_fix1.ko"
cp "$up/livepatch-shadow-fix2.ko" "$rootfs/m/c/livepatch_shadow_fix2.ko"

# Every sample: the shared ones and the kernel-only ones, each built for the run's engine.
engine=${ENGINE:-klp}
case "$engine" in klp|kgraft) ;; *) say "ENGINE is klp or kgraft, not $engine"; exit 2 ;; esac
echo "$engine" > "$rootfs/engine"
for src in "$root"/patches/*.kgp "$here"/patches/*.kgp; do
    p=$(basename "$src" .kgp)
    say "building $p ($engine)"
    t=$(now)
    if ! "$KGRAFTC" build --target linux --engine "$engine" --kdir "$KDIR" --module "$testmod" \
        --module "$up/livepatch-shadow-mod.ko" --ksrc "$KSRC" -o "$rootfs/m/$p.ko" "$src" > "$work/$p.build.log" 2>&1; then
        cat "$work/$p.build.log" >&2; say "building $p failed"; exit 1
    fi
    echo "build $p $(since "$t")s" >> "$times"
done
# Live patches made by `kgraftc from-diff` from the fixes in kernel-tests/fixes, straight from
# Debian's source tarball (scenario from_diff), for the run's engine.
mkdir -p "$rootfs/m/fd" "$work/fixes"
# shadow_fork_serial's do_exit uses tracepoints, whose static keys the module loader reads
# (`__jump_table`) before the kgraft engine can resolve them: it is built for the livepatch
# core only (the build refuses it with the kgraft engine, and says so).
fixes="cmdline_prefix.patch cmdline_new_function.diff meminfo_label.diff meminfo_counter.diff \
    settimeofday_tz_range.diff mm_alloc_fatal_signal.diff netfilter_null_flow.diff uname_version_mark.diff \
    uname_kpatch_style.diff version_header_helper.diff reboot_mode_type.diff module_sig_reason.diff"
[ "$engine" = kgraft ] || fixes="$fixes shadow_fork_serial.diff"
for fix in $fixes; do
    p=${fix%.*}
    say "from-diff $fix ($engine)"
    t=$(now)
    if ! "$KGRAFTC" from-diff "$here/fixes/$fix" --ksrc "$tarball_src" --kdir "$KDIR" --engine "$engine" --build \
        -o "$work/fixes/$p.kgp" > "$work/fixes/$p.log" 2>&1; then
        cat "$work/fixes/$p.log" >&2; say "from-diff $fix failed"; exit 1
    fi
    echo "from-diff $p $(since "$t")s" >> "$times"
    cp "$work/fixes/$p.ko" "$rootfs/m/fd/$p.ko"
done
# A fix of a module's function (xfs_stats_format, in xfs): the guest inserts xfs and what it
# needs (libcrc32c, and the crc32c algorithm libcrc32c asks the crypto API for) from the
# kernel's own modules, then loads the patch.
mods=/lib/modules/$release/kernel
for m in crypto/crc32c_generic lib/libcrc32c fs/xfs/xfs; do
    [ -e "$mods/$m.ko" ] || { say "no $mods/$m.ko: the xfs fix needs the kernel's modules (linux-image-$release)"; exit 2; }
done
mkdir -p "$rootfs/m/x"
cp "$mods/crypto/crc32c_generic.ko" "$rootfs/m/x/1-crc32c_generic.ko"
cp "$mods/lib/libcrc32c.ko" "$rootfs/m/x/2-libcrc32c.ko"
cp "$mods/fs/xfs/xfs.ko" "$rootfs/m/x/3-xfs.ko"
say "from-diff xfs_stats_mark.diff ($engine)"
t=$(now)
if ! "$KGRAFTC" from-diff "$here/fixes/xfs_stats_mark.diff" --ksrc "$tarball_src" --kdir "$KDIR" --engine "$engine" \
    --module "$mods/fs/xfs/xfs.ko" --build -o "$work/fixes/xfs_stats_mark.kgp" > "$work/fixes/xfs_stats_mark.log" 2>&1; then
    cat "$work/fixes/xfs_stats_mark.log" >&2; say "from-diff xfs_stats_mark.diff failed"; exit 1
fi
echo "from-diff xfs_stats_mark $(since "$t")s" >> "$times"
cp "$work/fixes/xfs_stats_mark.ko" "$rootfs/m/fd/xfs_stats_mark.ko"
# Two versions of one package (`kgraftc package`), unpacked as dpkg would for the guest to run
# their maintainer scripts: version 2 is cmdline_banner_v2, which replaces version 1. Packages
# are built for the run's engine, as the samples are.
for v in 1 2; do
    src=$root/patches/cmdline_banner.kgp
    [ $v = 1 ] || src=$root/patches/cmdline_banner_v2.kgp
    say "packaging version $v ($engine)"
    "$KGRAFTC" package --kdir "$KDIR" --engine "$engine" --format deb --name kgraft-patch-banner --pkg-version $v \
        -o "$work/banner_$v.deb" "$src" > "$work/package_$v.log" 2>&1 || { cat "$work/package_$v.log" >&2; exit 1; }
    mkdir -p "$rootfs/pkg/v$v"
    dpkg-deb -x "$work/banner_$v.deb" "$rootfs/pkg/v$v"
    dpkg-deb -e "$work/banner_$v.deb" "$rootfs/pkg/v$v/DEBIAN"
done

# A second build of an unchanged patch, to show the cache at work.
t=$(now)
"$KGRAFTC" build --target linux --kdir "$KDIR" -o "$work/warm.ko" "$root/patches/cmdline_banner.kgp" > "$work/warm.build.log" 2>&1
echo "warm-rebuild cmdline_banner $(since "$t")s" >> "$times"

gcc -static -O2 -Wall -o "$rootfs/bin/kgt" "$here/tool/kgt.c"
# A program without a C library (no multilib needed), for the ia32 and x86-64 system call entries.
for bits in 32 64; do
    gcc -m$bits -Os -nostdlib -static -ffreestanding -fno-pic -fno-pie -no-pie -fno-stack-protector -Wall \
        -o "$rootfs/bin/prio$bits" "$here/tool/prio32.c"
done

# kgraftc itself, for the `kgraftc kernel` scenarios: stripped, with the shared libraries ldd
# names at their own paths (as `kgraftc test` packs it).
host_program "$KGRAFTC" kgraftc strip
pack_busybox
cp "$here/scenarios" "$rootfs/scenarios"
# The book's transcripts, some of whose commands the guest runs (init.sh, `book`).
mkdir -p "$rootfs/book"
cp "$root"/book/src/transcripts/*.txt "$rootfs/book/"
cp "$here/guest.sh" "$rootfs/guest.sh"
pack_initramfs "$here/init.sh"

say "booting $release under qemu"
t=$(now)
boot_guest "${QEMU_TIMEOUT:-600}"
echo "qemu $(since "$t")s" >> "$times"
echo "total $(since "$start")s" >> "$times"

grep -E '^(KGRAFT-|pair|insmod|rmmod|kgt:)' "$work/console.txt" || true
cat "$times"
grep -q '^KGRAFT-DONE failed: none' "$work/console.txt" || { say "FAILED (console: $work/console.txt)"; exit 1; }
# As many passing verdicts as kernel-tests/scenarios has lines that name a scenario (for the
# kgraft engine, those not marked klp-only).
if [ "$engine" = klp ]; then
    want=$(grep -cEv '^[[:space:]]*(#|$)' "$here/scenarios")
else
    want=$(grep -Ev '^[[:space:]]*(#|$)' "$here/scenarios" | grep -cvw 'klp-only')
fi
n=$(grep -c '^KGRAFT-TEST .* PASS' "$work/console.txt")
[ "$n" -eq "$want" ] || { say "expected $want passing scenarios, saw $n"; exit 1; }
say "all $want scenarios passed"
