# shellcheck shell=sh
# Shared by the qemu harnesses (run.sh, engine.sh, selftests.sh), sourced once each has set
# `here`, `root`, `work` and `say`. Installs nothing.
# shellcheck disable=SC2154 # here, root, work and rootfs are the sourcing harness's

# Finds the kernel to boot and build against (KDIR, or the one kernel under /lib/modules; sets
# `KDIR`, `release`, `kernel`: /boot's image, or the one beside KDIR), checks that qemu, busybox (static), cpio and the programs named
# as arguments are here, and builds kgraftc unless KGRAFTC names one (sets `busybox`, `KGRAFTC`).
harness_setup() {
    tools="$*"
    if [ -z "${KDIR:-}" ]; then
        set -- /lib/modules/*/build
        [ $# -eq 1 ] && [ -e "$1" ] || { say "need exactly one kernel under /lib/modules, or KDIR"; exit 2; }
        KDIR=$1
    fi
    release=$(sed -n 's/.*UTS_RELEASE "\(.*\)"/\1/p' "$KDIR/include/generated/utsrelease.h")
    # A kernel of the fleet (scripts/setup.sh kernels) has its image beside its build directory.
    kernel=/boot/vmlinuz-$release
    [ -r "$(dirname "$KDIR")/vmlinuz" ] && kernel=$(dirname "$KDIR")/vmlinuz
    [ -r "$kernel" ] || { say "no kernel image $kernel (apt-get install linux-image-amd64)"; exit 2; }
    for tool in qemu-system-x86_64 busybox cpio $tools; do
        command -v "$tool" > /dev/null || [ -x "/bin/$tool" ] || [ -x "/sbin/$tool" ] \
            || { say "missing $tool (see kernel-tests/setup-notes.md)"; exit 2; }
    done
    busybox=$(command -v busybox || echo /bin/busybox)
    if command -v file > /dev/null && file -L "$busybox" | grep -q 'dynamically linked'; then
        say "$busybox is not static (apt-get install busybox-static)"; exit 2
    fi
    build_kgraftc
}

# Builds kgraftc unless KGRAFTC names one (sets `KGRAFTC`).
build_kgraftc() {
    if [ -z "${KGRAFTC:-}" ]; then
        say "building kgraftc"
        (cd "$root" && cargo build -q -p kgraftc --bin kgraftc)
        KGRAFTC=${CARGO_TARGET_DIR:-$root/target}/debug/kgraftc
    fi
}

# Builds the test module (kernel-tests/testmod) into WORK/testmod, gives it BTF and puts it in
# ROOTFS/m (sets `testmod`). kbuild gives an out-of-tree module no BTF (the headers have no
# vmlinux), so pahole adds it, on the kernel's own BTF (WORK/vmlinux.btf) as the base, as kbuild
# does for in-tree modules.
build_testmod() {
    say "building the test module"
    rm -rf "$work/testmod"
    cp -r "$here/testmod" "$work/testmod"
    make -s -C "$KDIR" M="$work/testmod" modules > "$work/testmod.log" 2>&1 || { cat "$work/testmod.log" >&2; exit 1; }
    testmod=$work/testmod/kgraft_testmod.ko
    "$KGRAFTC" btf --kdir "$KDIR" -o "$work/vmlinux.btf"
    pahole -J --btf_base "$work/vmlinux.btf" "$testmod" || { say "pahole could not add BTF to the test module"; exit 1; }
    cp "$testmod" "$rootfs/m/"
}

# Copies the host program $1 to ROOTFS/bin/$2 (stripped when $3 is `strip`), with the shared
# libraries ldd names at their own paths.
host_program() { # path, name in /bin, [strip]
    if [ "${3:-}" = strip ]; then strip -o "$rootfs/bin/$2" "$1"; else cp -L "$1" "$rootfs/bin/$2"; fi
    for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
        mkdir -p "$rootfs$(dirname "$lib")"
        [ -e "$rootfs$lib" ] || cp -L "$lib" "$rootfs$lib"
    done
}

# Puts busybox in ROOTFS/bin, with a link for each applet that /bin does not have yet.
pack_busybox() {
    cp "$busybox" "$rootfs/bin/busybox"
    for cmd in $("$busybox" --list); do
        [ -e "$rootfs/bin/$cmd" ] || ln -s busybox "$rootfs/bin/$cmd"
    done
}

# Packs ROOTFS with $1 as its /init into WORK/initramfs.gz.
pack_initramfs() { # init script
    cp "$1" "$rootfs/init"
    chmod +x "$rootfs/init"
    (cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"
}

# Boots the kernel with WORK/initramfs.gz, the console in WORK/console.txt; $1 is the timeout
# (s), the rest goes on the kernel's command line. Two vCPUs, run by one host thread
# (`thread=single`): with qemu's multi-threaded TCG the guest sometimes locked up, one vCPU stuck
# at the entry of kgt_decode while the kernel rewrote that entry from the other vCPU under the
# pair hammer (the softlockup trace showed RIP at the fentry NOP); with a single TCG thread it
# did not happen in six runs under load. oops=panic and softlockup_panic: an oops or a CPU stuck
# in the kernel ends the run at once, with its stack on the console, instead of when the timeout
# strikes.
boot_guest() { # timeout, extra kernel parameters
    timeout_s=$1
    shift
    timeout "$timeout_s" qemu-system-x86_64 -nographic -no-reboot -m 1024 -smp 2 -accel tcg,thread=single -nic none \
        -kernel "$kernel" -initrd "$work/initramfs.gz" \
        -append "console=ttyS0 quiet panic=-1 oops=panic softlockup_panic=1 $*" < /dev/null > "$work/console.log" 2>&1 || true
    tr -d '\r' < "$work/console.log" > "$work/console.txt"
}
