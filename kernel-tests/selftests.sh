#!/bin/sh
# Runs upstream's livepatch selftests (tools/testing/selftests/livepatch of Linux 6.1) on the
# installed Debian kernel under qemu, with every livepatch test module written as `.kgp`
# (kernel-tests/selftests/*.kgp, built by `kgraftc build --target linux`) and upstream's other
# test modules (the targets test_klp_callbacks_mod and test_klp_callbacks_busy, and
# test_klp_shadow_vars, which exercises the klp_shadow API) built from the kernel's source. The
# scripts run unchanged, under bash, with kmod's modprobe finding the modules by name. The same
# boot compares the kernel log of the sample livepatch-callbacks-demo, C original and `.kgp`
# port (kernel-tests/samples/livepatch_callbacks_demo.kgp). Installs nothing; see
# setup-notes.md for the packages it uses.
#
# Usage: kernel-tests/selftests.sh [WORK_DIR]   (default: target/kernel-selftests)
# Environment: KDIR (kernel build directory), KGRAFTC (a built kgraftc), QEMU_TIMEOUT (s),
# KSRC (a kernel source tree with lib/livepatch, samples/livepatch and
# tools/testing/selftests/livepatch; default: those, from Debian's linux-source-6.1 tarball),
# KGRAFT_SELFTESTS_C=1 (a reference run: upstream's C livepatch test modules instead of the
# ports).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=${1:-$root/target/kernel-selftests}
mkdir -p "$work"
work=$(cd "$work" && pwd)
say() { echo "kernel-selftests: $*" >&2; }

. "$here/lib.sh"
# The guest runs the scripts with the host's bash, kmod and the GNU tools functions.sh uses
# (options busybox lacks: `mktemp --tmpdir`, `comm --nocheck-order`, `stat --format`,
# `sysctl --values`, `diff --label`).
harness_setup gcc make pahole ldd bash kmod depmod mktemp comm stat diff sysctl

if [ -z "${KSRC:-}" ]; then
    tarball=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || { say "no /usr/src/linux-source-6.1.tar.* (apt-get install linux-source-6.1), or set KSRC"; exit 2; }
    KSRC=$work/ksrc/linux-source-6.1
    if [ ! -e "$KSRC/lib/livepatch/Makefile" ] || [ ! -e "$KSRC/tools/testing/selftests/livepatch/functions.sh" ] \
        || [ ! -e "$KSRC/samples/livepatch/Makefile" ]; then
        say "unpacking the livepatch tests and samples from $tarball"
        mkdir -p "$work/ksrc"
        tar xf "$tarball" -C "$work/ksrc" --wildcards 'linux-source-6.1/lib/livepatch/*' \
            'linux-source-6.1/tools/testing/selftests/livepatch/*' 'linux-source-6.1/samples/livepatch/*'
    fi
fi
scripts=$KSRC/tools/testing/selftests/livepatch

rootfs=$work/rootfs
rm -rf "$rootfs"
moddir=$rootfs/lib/modules/$release/extra
mkdir -p "$rootfs/bin" "$rootfs/m/c" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp" "$rootfs/dev" "$moddir" \
    "$rootfs/selftests/livepatch"

# Upstream's modules, built from the source by kbuild: the selftests' targets and the shadow
# variable test, the callbacks sample's targets and its C original. kbuild gives an
# out-of-tree module no BTF, so pahole adds it on the kernel's own BTF, as kbuild does for
# in-tree modules: `kgraftc build --module` checks the ports against it.
say "building upstream's modules"
up=$work/upstream
rm -rf "$up"
mkdir -p "$up"
targets="test_klp_callbacks_mod test_klp_callbacks_busy"
lp_tests="test_klp_livepatch test_klp_atomic_replace test_klp_callbacks_demo test_klp_callbacks_demo2 test_klp_state test_klp_state2 test_klp_state3"
c_tests=""
[ "${KGRAFT_SELFTESTS_C:-}" = 1 ] && c_tests=$lp_tests
for m in $targets test_klp_shadow_vars $c_tests; do
    cp "$KSRC/lib/livepatch/$m.c" "$up/"
    echo "obj-m += $m.o" >> "$up/Kbuild"
done
# test_klp_state3.c includes test_klp_state2.c.
[ -z "$c_tests" ] || cp "$KSRC/lib/livepatch/test_klp_state2.c" "$up/"
for f in livepatch-callbacks-demo livepatch-callbacks-mod livepatch-callbacks-busymod; do
    cp "$KSRC/samples/livepatch/$f.c" "$up/"
    echo "obj-m += $f.o" >> "$up/Kbuild"
done
make -s -C "$KDIR" M="$up" modules > "$work/upstream.log" 2>&1 || { cat "$work/upstream.log" >&2; exit 1; }
"$KGRAFTC" btf --kdir "$KDIR" -o "$work/vmlinux.btf"
for m in $targets livepatch-callbacks-mod livepatch-callbacks-busymod; do
    pahole -J --btf_base "$work/vmlinux.btf" "$up/$m.ko" || { say "pahole could not add BTF to $m"; exit 1; }
done
for m in $targets test_klp_shadow_vars $c_tests; do cp "$up/$m.ko" "$moddir/"; done
cp "$up/livepatch-callbacks-mod.ko" "$rootfs/m/livepatch_callbacks_mod.ko"
cp "$up/livepatch-callbacks-busymod.ko" "$rootfs/m/livepatch_callbacks_busymod.ko"
cp "$up/livepatch-callbacks-demo.ko" "$rootfs/m/c/livepatch_callbacks_demo.ko"

# The ports: each livepatch test module from its `.kgp`, named by the file (which is the
# patch's name), and the callbacks sample.
build() { # source, output
    name=$(basename "$1" .kgp)
    say "building $name"
    "$KGRAFTC" build --target linux --kdir "$KDIR" --module "$up/test_klp_callbacks_mod.ko" \
        --module "$up/test_klp_callbacks_busy.ko" --module "$up/livepatch-callbacks-mod.ko" \
        --module "$up/livepatch-callbacks-busymod.ko" -o "$2" "$1" > "$work/$name.build.log" 2>&1 \
        || { cat "$work/$name.build.log" >&2; say "building $name failed"; exit 1; }
}
for m in $lp_tests; do
    [ -e "$here/selftests/$m.kgp" ] || { say "no kernel-tests/selftests/$m.kgp"; exit 1; }
    [ -n "$c_tests" ] || build "$here/selftests/$m.kgp" "$moddir/$m.ko"
done
build "$here/samples/livepatch_callbacks_demo.kgp" "$rootfs/m/livepatch_callbacks_demo.ko"
# modprobe reads the index depmod writes; the kernel's list of built-in modules comes along.
for f in modules.builtin modules.builtin.modinfo modules.order; do
    if [ -e "/lib/modules/$release/$f" ]; then cp "/lib/modules/$release/$f" "$rootfs/lib/modules/$release/"; else : > "$rootfs/lib/modules/$release/$f"; fi
done
depmod -b "$rootfs" "$release"

# The scripts, unchanged, and the order the kselftest Makefile lists them in.
cp "$scripts"/*.sh "$scripts/settings" "$rootfs/selftests/livepatch/"
sed -n 's/^[[:space:]]*\(test-[a-z-]*\.sh\).*/\1/p' "$scripts/Makefile" > "$rootfs/selftests/livepatch/order"
[ -s "$rootfs/selftests/livepatch/order" ] || { say "no test scripts listed in $scripts/Makefile"; exit 1; }

# Programs: busybox for the rest, the host's for what the scripts need beyond it, each with
# the shared libraries ldd names at their own paths. kmod's names go in /bin before busybox's.
for p in bash mktemp comm stat diff sysctl; do host_program "$(command -v $p || echo /sbin/$p)" $p; done
host_program "$(command -v kmod)" kmod
for cmd in modprobe modinfo insmod rmmod lsmod depmod; do ln -s kmod "$rootfs/bin/$cmd"; done
pack_busybox
ln -s bin "$rootfs/sbin"
pack_initramfs "$here/selftests-init.sh"

say "booting $release under qemu"
# The scripts write to /dev/kmsg once per line (printk.devkmsg=on: not rate limited), and
# compare the kernel log from before each case (log_buf_len: no line of the run is lost).
boot_guest "${QEMU_TIMEOUT:-1200}" printk.devkmsg=on log_buf_len=4M

grep -E '^KGRAFT-(ST-(CASE|SCRIPT)|DEMO [a-z])' "$work/console.txt" || true
grep -q '^KGRAFT-ST-DONE' "$work/console.txt" || { say "the guest did not finish (console: $work/console.txt)"; exit 1; }
# Every `start_test` of a script is a case; a script that died skipped the cases after it.
total=0
while read -r t; do
    n=$(grep -c '^start_test' "$scripts/$t" || true)
    passed=$(grep -c "^KGRAFT-ST-CASE $t PASS " "$work/console.txt" || true)
    rc=$(sed -n "s/^KGRAFT-ST-SCRIPT $t rc=//p" "$work/console.txt")
    echo "KGRAFT-SELFTESTS $t $passed/$n passed (exit status ${rc:-none})"
    total=$((total + n))
done < "$rootfs/selftests/livepatch/order"
passed=$(grep -c '^KGRAFT-ST-CASE .* PASS ' "$work/console.txt" || true)
failed=$(grep -c '^KGRAFT-ST-SCRIPT .* rc=[1-9]' "$work/console.txt" || true)
echo "KGRAFT-SELFTESTS total $passed/$total passed"
status=0
[ "$passed" -eq "$total" ] && [ "$failed" -eq 0 ] || { say "not every case passed (console: $work/console.txt)"; status=1; }
grep -q '^KGRAFT-DEMO same' "$work/console.txt" \
    || { say "the callbacks demo's port did not log what the C sample logs (console: $work/console.txt)"; status=1; }
exit $status
