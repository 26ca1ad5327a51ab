#!/bin/sh
# /init of kernel-tests/nolp.sh's guest: a kernel without the livepatch core. Applies the
# samples built for the kgraft engine and prints `KGRAFT-TEST NAME PASS|FAIL: why`, one `run NAME`
# line (the function scenario_NAME) per scenario, which kgraftc/tests/kernel_engine.rs reads.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/bin
# The firmware's last line on the console has no newline: verdicts start lines of their own.
echo
. /guest.sh

scenario_no_core() {
    [ -d /sys/kernel/livepatch ] && { echo "this kernel has the livepatch core"; return; }
    grep -q ' klp_enable_patch$' /proc/kallsyms && { echo "klp_enable_patch is in kallsyms"; return; }
    insmod /m/kgraft_testmod.ko || { echo "insmod kgraft_testmod failed"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "test module: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}

scenario_shadow_counter() {
    load shadow_counter || return
    a="$(cat /proc/kgraft_testmod)"; b="$(cat /proc/kgraft_testmod)"
    [ "$a" = "kgt alpha v2 reads=1" ] && [ "$b" = "kgt alpha v2 reads=2" ] || { echo "patched: '$a' '$b'"; return; }
    dmesg | grep -q 'shadow_counter post_patch' || { echo "no post_patch in the log"; return; }
    unload shadow_counter || return
    dmesg | grep -q 'shadow_counter post_unpatch' || { echo "no post_unpatch in the log"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}

stlog() { dmesg | grep -v 'kgraft: console_state' | grep -oE 'console_state(_v2)?: .*' | tail -n 1; }
scenario_system_states() {
    t0=$(kgt now)
    insmod /m/console_state.ko prefix=nolp || { echo "insmod console_state failed"; return; }
    kgt wait console_state "$t0" || return
    [ "$(stlog)" = "console_state: saved loglevel 7, version 1" ] || { echo "v1: $(stlog)"; return; }
    load console_state_v2 || return
    [ "$(stlog)" = "console_state_v2: took over loglevel 7 from version 1" ] || { echo "v2: $(stlog)"; return; }
    kgt gone console_state || { echo "console_state was not replaced"; return; }
    unload console_state || return
    insmod /m/console_state.ko 2>/dev/null && { echo "a lower state version was accepted"; return; }
    unload console_state_v2 || return
    [ "$(stlog)" = "console_state_v2: restored loglevel 7" ] || { echo "v2 off: $(stlog)"; return; }
    echo ok
}

scenario_meminfo_string() {
    load meminfo_string || return
    grep -q '^MemTOTAL:' /proc/meminfo || { echo "patched: $(head -n 1 /proc/meminfo)"; return; }
    unload meminfo_string || return
    grep -q '^MemTotal:' /proc/meminfo || { echo "not restored: $(head -n 1 /proc/meminfo)"; return; }
    echo ok
}

scenario_module_extern() {
    load module_extern || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v3 id=1 same=1" ] || { echo "patched: $(cat /proc/kgraft_testmod)"; return; }
    unload module_extern || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}

run no_core
run shadow_counter
run system_states
run meminfo_string
run module_extern
dmesg | grep -E 'kgraft|Oops|BUG|WARNING' | sed 's/^/KGRAFT-LOG /'
echo "KGRAFT-DONE failed:${FAILED:- none}"
# No ACPI in this kernel: a reboot ends qemu (-no-reboot), a power-off would only halt.
reboot -f
