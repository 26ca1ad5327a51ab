#!/bin/sh
# kgraft's own engine on a kernel built without the livepatch core (CONFIG_LIVEPATCH=n).
#
# Builds a small Linux 6.1 from Debian's linux-source-6.1 tarball under /usr/src (tinyconfig,
# plus what the engine and the guest need: modules, dynamic ftrace with direct calls, kprobes,
# kallsyms, the ORC unwinder, BTF, a serial console, an initramfs), with CONFIG_LIVEPATCH off;
# builds the test module and samples for the kgraft engine against it; boots it under qemu and
# applies them: shadow data and callbacks (shadow_counter), system states handed on through
# replace_all (console_state, console_state_v2), symbols vmlinux does not export
# (meminfo_string) and a module's own unexported symbol (module_extern). The guest prints
# `KGRAFT-TEST NAME PASS|FAIL: why` and `KGRAFT-DONE failed: ...`.
#
# Usage: kernel-tests/nolp.sh [WORK_DIR] (default: target/kernel-tests-nolp);
# kgraftc/tests/kernel_engine.rs runs it. The kernel
# build takes about five minutes on two cores; the kernel is kept in WORK_DIR/linux and built
# again only when this script's configuration changes. Environment: KGRAFTC, QEMU_TIMEOUT.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=${1:-$root/target/kernel-tests-nolp}
mkdir -p "$work"
work=$(cd "$work" && pwd)
say() { echo "kernel-tests (nolp): $*" >&2; }
. "$here/lib.sh"

tarball=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n 1)
[ -n "$tarball" ] || { say "no /usr/src/linux-source-6.1.tar.* (apt-get install linux-source-6.1)"; exit 2; }
for tool in qemu-system-x86_64 busybox cpio pahole flex bison bc gcc make; do
    command -v "$tool" > /dev/null || { say "missing $tool"; exit 2; }
done

# The kernel: tinyconfig, what the engine and the guest need, and no livepatch core.
linux=$work/linux
options="64BIT SMP MODULES MODULE_UNLOAD PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD
RD_GZIP PROC_FS PROC_SYSCTL SYSFS DEVTMPFS BINFMT_ELF BINFMT_SCRIPT SHMEM TMPFS FUTEX EPOLL
SIGNALFD TIMERFD EVENTFD MULTIUSER POSIX_TIMERS FILE_LOCKING HIGH_RES_TIMERS FTRACE
FUNCTION_TRACER DYNAMIC_FTRACE FTRACE_SYSCALLS KPROBES KALLSYMS KALLSYMS_ALL STACKTRACE
UNWINDER_ORC DEBUG_KERNEL DEBUG_INFO_DWARF5 DEBUG_INFO_BTF BPF BPF_SYSCALL JUMP_LABEL PCI
TTY_PRINTK UNIX NET INET NO_HZ_IDLE DEVTMPFS_MOUNT CPU_MITIGATIONS RETPOLINE RETHUNK"
stamp=$(printf '%s\n' "$options" | cksum | cut -d ' ' -f 1)
if [ ! -f "$linux/arch/x86/boot/bzImage" ] || [ "$(cat "$linux/.kgraft-stamp" 2>/dev/null)" != "$stamp" ]; then
    say "unpacking $tarball"
    rm -rf "$linux" "$work/linux-source-6.1"
    tar -C "$work" -xf "$tarball"
    mv "$work/linux-source-6.1" "$linux"
    say "configuring: tinyconfig, CONFIG_LIVEPATCH off"
    make -s -C "$linux" tinyconfig > /dev/null
    for o in $options; do "$linux/scripts/config" --file "$linux/.config" -e "$o"; done
    "$linux/scripts/config" --file "$linux/.config" -d LIVEPATCH --set-str LOCALVERSION -nolp
    make -s -C "$linux" olddefconfig > /dev/null
    ! grep -q "^CONFIG_LIVEPATCH=y" "$linux/.config" || { say "CONFIG_LIVEPATCH is still set"; exit 1; }
    for o in DYNAMIC_FTRACE_WITH_DIRECT_CALLS HAVE_RELIABLE_STACKTRACE DEBUG_INFO_BTF MODULES KPROBES RETHUNK; do
        grep -q "^CONFIG_$o=y" "$linux/.config" || { say "CONFIG_$o did not stick"; exit 1; }
    done
    say "building the kernel (about five minutes on two cores)"
    make -s -C "$linux" -j"$(nproc)" bzImage modules > "$work/linux.log" 2>&1 || { tail -n 40 "$work/linux.log" >&2; exit 1; }
    echo "$stamp" > "$linux/.kgraft-stamp"
fi
KDIR=$linux
kernel=$linux/arch/x86/boot/bzImage
release=$(make -s -C "$linux" kernelrelease)
say "kernel $release"

build_kgraftc

rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/m" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp"

# The test module: kbuild gives it BTF itself, this tree having its vmlinux.
say "building the test module"
rm -rf "$work/testmod"
cp -r "$here/testmod" "$work/testmod"
make -s -C "$KDIR" M="$work/testmod" modules > "$work/testmod.log" 2>&1 || { cat "$work/testmod.log" >&2; exit 1; }
testmod=$work/testmod/kgraft_testmod.ko
cp "$testmod" "$rootfs/m/"

# The samples, for the kgraft engine. The kernel-only ones name Debian's releases in their
# header (`kernel: "6.1.0-*-amd64"`), which this kernel is not: their copies leave it out.
mkdir -p "$work/src"
for p in shadow_counter console_state console_state_v2; do cp "$root/patches/$p.kgp" "$work/src/"; done
for p in meminfo_string module_extern; do
    grep -v '^ *kernel: "' "$here/patches/$p.kgp" > "$work/src/$p.kgp"
done
for src in "$work"/src/*.kgp; do
    p=$(basename "$src" .kgp)
    say "building $p (kgraft engine)"
    "$KGRAFTC" build --target linux --engine kgraft --kdir "$KDIR" --vmlinux "$linux/vmlinux" \
        --module "$testmod" --ksrc "$linux" -o "$rootfs/m/$p.ko" "$src" > "$work/$p.build.log" 2>&1 \
        || { cat "$work/$p.build.log" >&2; say "building $p failed"; exit 1; }
    if modinfo -F livepatch "$rootfs/m/$p.ko" | grep -q .; then say "$p is marked as a livepatch module"; exit 1; fi
done

busybox=$(command -v busybox)
pack_busybox
gcc -static -O2 -Wall -o "$rootfs/bin/kgt" "$here/tool/kgt.c"
cp "$here/guest.sh" "$rootfs/guest.sh"
echo kgraft > "$rootfs/engine"
pack_initramfs "$here/nolp-init.sh"

say "booting $release under qemu"
boot_guest "${QEMU_TIMEOUT:-600}"
grep -a '^KGRAFT-TEST' "$work/console.txt" >&2 || true
grep -aq '^KGRAFT-DONE failed: none$' "$work/console.txt" || { say "FAILED (console: $work/console.txt)"; exit 1; }
say "all passed"
