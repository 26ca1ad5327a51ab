#!/bin/sh
# The /init of the engine test initramfs (engine.sh): kgraft's own engine (`--engine kgraft`),
# next to the livepatch core for the comparisons. One verdict line per scenario, as init.sh
# prints them, "KGRAFT-BENCH ..." lines with the benchmark's figures, and "KGRAFT-DONE".
# Modules: /m/kgraft/*.ko built with --engine kgraft, /m/klp/*.ko with --engine klp.

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t devtmpfs devtmpfs /dev
export PATH=/bin
. /guest.sh
# The best of three reads of /proc/kgraft_bench, in ns per call (two decimals).
bench() {
    best=""
    for _ in 1 2 3; do
        ns=$(sed -n 's/^calls=\([0-9]*\) ns=\([0-9]*\)$/\2 \1/p' /proc/kgraft_bench | awk '{ printf "%.2f", $1 / $2 }')
        [ -z "$best" ] || [ "$(echo "$ns $best" | awk '{ print ($1 < $2) }')" = 1 ] && best=$ns
    done
    echo "$best"
}

echo
ORIG="$(cat /proc/cmdline)"
insmod /m/kgraft_testmod.ko spin=1 || echo "insmod kgraft_testmod failed"

# 1. The basics: patched through a direct call, state in sysfs, no rmmod while enabled,
# unpatched through a transition back.
scenario_engine_basic() {
    load kgraft/cmdline_banner || return
    out="$(cat /proc/cmdline)"
    [ "$out" = "$(printf 'kgraft: cmdline_banner active\n%s' "$ORIG")" ] || { echo "patched /proc/cmdline: $out"; return; }
    [ "$(cat "$(pd cmdline_banner)/enabled")" = 1 ] || { echo "enabled is not 1"; return; }
    [ -z "$(cat "$(pd cmdline_banner)/stragglers")" ] || { echo "stragglers after the transition"; return; }
    # Tasks' stacks are root's alone to read.
    [ "$(stat -c %a "$(pd cmdline_banner)/stragglers")" = 400 ] || { echo "stragglers is $(stat -c %a "$(pd cmdline_banner)/stragglers")"; return; }
    [ -e "$LP/cmdline_banner" ] && { echo "registered with the livepatch core"; return; }
    dmesg | grep -q 'kgraft: cmdline_banner: patching complete' || { echo "no 'patching complete' in the log"; return; }
    dmesg | grep -q 'cmdline_proc_show keeps its ftrace handler' && { echo "no direct call"; return; }
    rmmod cmdline_banner 2>/dev/null && { echo "rmmod succeeded while the patch was enabled"; return; }
    unload cmdline_banner || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    dmesg | grep -q 'kgraft: cmdline_banner: unpatching complete' || { echo "no 'unpatching complete' in the log"; return; }
    [ -e /sys/kernel/kgraft/cmdline_banner ] && { echo "the patch's directory stayed"; return; }
    [ -d /sys/kernel/kgraft ] || { echo "/sys/kernel/kgraft went with the patch"; return; }
    # A second patch finds the directory the first made.
    load kgraft/cmdline_banner || return
    unload cmdline_banner || return
    echo ok
}
run engine_basic

# 2. Callbacks in the livepatch core's order, and shadow data freed with the patch.
scenario_engine_callbacks_shadow() {
    load kgraft/shadow_counter || return
    a="$(cat /proc/kgraft_testmod)"; b="$(cat /proc/kgraft_testmod)"
    [ "$a" = "kgt alpha v2 reads=1" ] && [ "$b" = "kgt alpha v2 reads=2" ] || { echo "patched: '$a' '$b'"; return; }
    unload shadow_counter || return
    order="$(dmesg | sed -n 's/.*kgraft: shadow_counter \(pre_patch\|post_patch\|pre_unpatch\|post_unpatch\)$/\1/p' | tr '\n' ' ')"
    [ "$order" = "pre_patch post_patch pre_unpatch post_unpatch " ] || { echo "callbacks ran: $order"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    load kgraft/shadow_counter || return
    a="$(cat /proc/kgraft_testmod)"
    unload shadow_counter || return
    [ "$a" = "kgt alpha v2 reads=1" ] || { echo "shadow data outlived the patch: $a"; return; }
    echo ok
}
run engine_callbacks_shadow

# 3. Consistency under load, from user space (the hammer) and from a busy kernel thread: one
# patch changing both functions of a pair never mixes them; two patches, one function each, do.
spin_mismatches() { sed -n 's/.* mismatches=\([0-9]*\)$/\1/p' /proc/kgraft_spin; }
together() { load kgraft/pair_v2 && sleep 1 && unload pair_v2; }
apart() { load kgraft/pair_encode_only && sleep 1 && load kgraft/pair_decode_only && sleep 1 && unload pair_decode_only && unload pair_encode_only; }
scenario_engine_consistency() {
    k0=$(spin_mismatches)
    one="$(hammered together)"; echo "$one" | grep -v '^calls='
    k1=$(spin_mismatches)
    echo "KGRAFT-PAIR kgraft engine, one patch (pair_v2): $(echo "$one" | grep '^calls='); kernel thread mismatches=$((k1 - k0)) ($(cat /proc/kgraft_spin))"
    two="$(hammered apart)"; echo "$two" | grep -v '^calls='
    k2=$(spin_mismatches)
    echo "KGRAFT-PAIR kgraft engine, two patches: $(echo "$two" | grep '^calls='); kernel thread mismatches=$((k2 - k1))"
    echo "$one" | grep -q ' mismatches=0 failures=0' || { echo "one patch: mismatches"; return; }
    [ "$k1" = "$k0" ] || { echo "one patch: the kernel thread saw $((k1 - k0)) mismatches"; return; }
    echo "$two" | grep -q 'calls=' || { echo "two patches: hammer did not run"; return; }
    echo "$two" | grep -q ' mismatches=0 ' && [ "$k2" = "$k1" ] && { echo "two patches: no mismatches seen"; return; }
    echo ok
}
run engine_consistency

# 4. A task asleep in a changed function holds the transition; `stragglers` names it with its
# stack, the fake signal wakes it, and the transition ends. Also the benchmark: the cost of a
# call unpatched, through the livepatch core's handler, through the reality check (during the
# transition) and through the direct call (after it).
scenario_engine_sleeper_bench() {
    unpatched=$(bench)
    load klp/bench_target || return
    klp=$(bench)
    unload bench_target || return
    cat /proc/kgraft_nap > /tmp/nap &
    np=$!
    sleep 0.5
    t0=$(kgt now)
    insmod /m/kgraft/bench_target.ko || { echo "insmod kgraft/bench_target failed"; return; }
    [ "$(cat "$(pd bench_target)/transition")" = 1 ] || { echo "the transition did not wait for the sleeper"; return; }
    during=$(bench)
    s="$(cat "$(pd bench_target)/stragglers")"
    echo "stragglers: $s"
    echo "$s" | grep -q "^cat (pid $np): .*kgt_nap" || { echo "the sleeper is not named with its stack: $s"; return; }
    kgt wait bench_target "$t0" || return
    wait $np
    # The fake signal ended the sleep; the read was restarted, and ran the new code.
    [ "$(cat /tmp/nap)" = 3 ] || { echo "the sleeper did not run the new code: $(cat /tmp/nap)"; return; }
    direct=$(bench)
    unload bench_target || return
    echo "KGRAFT-BENCH ns/call: unpatched $unpatched, livepatch core $klp, kgraft during the transition $during, kgraft after it (direct call) $direct"
    echo "$unpatched $klp $during $direct" | awk '{ printf "KGRAFT-BENCH ratio to unpatched: livepatch core %.2f, kgraft during %.2f, kgraft direct %.2f\n", $2/$1, $3/$1, $4/$1 }'
    echo ok
}
run engine_sleeper_bench

# 5. Turning a transition around: `enabled` set to 0 while a sleeper holds the transition.
scenario_engine_reverse() {
    cat /proc/kgraft_nap > /tmp/nap &
    np=$!
    sleep 0.5
    insmod /m/kgraft/nap_short.ko || { echo "insmod kgraft/nap_short failed"; return; }
    [ "$(cat "$(pd nap_short)/transition")" = 1 ] || { echo "no transition in progress"; return; }
    echo 0 > "$(pd nap_short)/enabled" || { echo "cannot write enabled"; return; }
    kgt gone nap_short || return
    dmesg | grep -q 'kgraft: nap_short: patching reversed' || { echo "no reversal in the log"; return; }
    rmmod nap_short || { echo "rmmod after the reversal failed"; return; }
    kill $np 2>/dev/null; wait $np 2>/dev/null
    echo ok
}
run engine_reverse

# 6. One function, one live patch: either engine refuses a function the other holds, cleanly.
scenario_engine_conflict() {
    load klp/cmdline_banner || return
    insmod /m/kgraft/c_banner.ko 2>/dev/null && { echo "kgraft took a function the livepatch core holds"; return; }
    dmesg | grep -q 'kgraft: c_banner: cannot redirect cmdline_proc_show' || { echo "no message naming the function"; return; }
    [ -d /sys/module/c_banner ] && { echo "c_banner left loaded"; return; }
    grep -q '^kgraft: cmdline_banner active' /proc/cmdline || { echo "the livepatch core's patch was disturbed"; return; }
    unload cmdline_banner || return
    load kgraft/c_banner || return
    grep -q '^kgraft: c_banner active (C)' /proc/cmdline || { echo "c_banner (C body) not active: $(head -n 1 /proc/cmdline)"; return; }
    insmod /m/klp/cmdline_banner.ko 2>/dev/null
    sleep 1
    grep -q '^kgraft: c_banner active (C)' /proc/cmdline || { echo "the livepatch core took a function kgraft holds"; return; }
    [ -d "$LP/cmdline_banner" ] && { echo "cmdline_banner stayed registered"; return; }
    rmmod cmdline_banner 2>/dev/null
    unload c_banner || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}
run engine_conflict

# 7. A pre_patch callback that refuses: insmod fails with its error, nothing stays.
refs() { sed -n 's/^kgraft_testmod [0-9]* \([0-9]*\) .*/\1/p' /proc/modules; }
scenario_engine_prepatch_refusal() {
    r0=$(refs)
    insmod /m/kgraft/refuse_pre_patch.ko 2>/dev/null && { echo "the refused patch loaded"; return; }
    [ -d /sys/module/refuse_pre_patch ] && { echo "the refused patch stayed"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "changed: $(cat /proc/kgraft_testmod)"; return; }
    # The test module is not pinned by a patch that is gone.
    [ "$(refs)" = "$r0" ] || { echo "the test module's references went from $r0 to $(refs)"; return; }
    echo ok
}
run engine_prepatch_refusal

# 8. A system call replaced by the kgraft engine: every entry, x86-64 and ia32.
scenario_engine_syscall() {
    before="$(prio64)"
    load kgraft/getpriority_syscall || return
    [ "$(prio64)" = "10 14" ] || { echo "x64 entry: $(prio64)"; return; }
    [ "$(prio32)" = "10 14" ] || { echo "ia32 entry: $(prio32)"; return; }
    unload getpriority_syscall || return
    [ "$(prio64)" = "$before" ] || { echo "not restored: $(prio64), was $before"; return; }
    echo ok
}
run engine_syscall

# 9. `kgraftc kernel` with the kgraft engine's files: load waits for the transition, list and
# status show the patch with its engine, unload disables it and removes the module.
scenario_engine_kgraftc_kernel() {
    kgraftc kernel load /m/kgraft/cmdline_banner.ko 2> /tmp/load || { cat /tmp/load; echo "kgraftc kernel load failed"; return; }
    grep -q '^cmdline_banner is enabled' /tmp/load || { cat /tmp/load; echo "load did not say it is enabled"; return; }
    kgraftc kernel list > /tmp/list || { echo "kgraftc kernel list failed"; return; }
    grep -q '^cmdline_banner  *enabled  *kgraft  *vmlinux:cmdline_proc_show$' /tmp/list || { cat /tmp/list; echo "list does not show the patch"; return; }
    kgraftc kernel status cmdline_banner | grep -q '^cmdline_banner: enabled (kgraft engine)$' || { echo "status does not show the patch"; return; }
    kgraftc kernel unload cmdline_banner 2> /tmp/unload || { cat /tmp/unload; echo "kgraftc kernel unload failed"; return; }
    [ -d /sys/module/cmdline_banner ] && { echo "the module stayed"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}
run engine_kgraftc_kernel

# 10. Modules that come and go while a patch is on: the callbacks of the module's object run
# with its state as the livepatch core runs them, and a module loaded after the patch gets its
# functions patched as it loads (and unhooked as it goes).
scenario_engine_module_objects() {
    m="kgraft_testmod -> [MODULE_STATE_LIVE] Normal state"
    load kgraft/object_callbacks || return
    want="object_callbacks pre_patch: vmlinux|object_callbacks pre_patch: $m|object_callbacks post_patch: $m|"
    [ "$(cblog 3)" = "$want" ] || { echo "patching: $(cblog 3)"; return; }
    rmmod kgraft_testmod || { echo "rmmod kgraft_testmod failed"; return; }
    g="kgraft_testmod -> [MODULE_STATE_GOING] Going away"
    [ "$(cblog 2)" = "object_callbacks pre_unpatch: $g|object_callbacks post_unpatch: $g|" ] || { echo "module going: $(cblog 2)"; return; }
    insmod /m/kgraft_testmod.ko || { echo "insmod kgraft_testmod failed"; return; }
    c="kgraft_testmod -> [MODULE_STATE_COMING] Full formed, running module_init"
    [ "$(cblog 2)" = "object_callbacks pre_patch: $c|object_callbacks post_patch: $c|" ] || { echo "module coming: $(cblog 2)"; return; }
    unload object_callbacks || return
    want="object_callbacks pre_unpatch: $m|object_callbacks post_unpatch: vmlinux|object_callbacks post_unpatch: $m|"
    [ "$(cblog 3)" = "$want" ] || { echo "unpatching: $(cblog 3)"; return; }

    rmmod kgraft_testmod || { echo "rmmod kgraft_testmod failed"; return; }
    load kgraft/shadow_counter || return
    dmesg | grep -q 'kgraft: shadow_counter: module kgraft_testmod is not loaded: kgt_describe is patched when it loads' || { echo "no word of the late module"; return; }
    insmod /m/kgraft_testmod.ko || { echo "insmod kgraft_testmod failed"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v2 reads=1" ] || { echo "late module not patched: $(cat /proc/kgraft_testmod)"; return; }
    rmmod kgraft_testmod || { echo "rmmod of a patched module failed"; return; }
    insmod /m/kgraft_testmod.ko spin=1 || { echo "insmod kgraft_testmod failed"; return; }
    # Its device may come back at the same address, with the shadow counter it had: any count.
    case "$(cat /proc/kgraft_testmod)" in "kgt alpha v2 reads="*) ;; *) echo "reloaded module not patched: $(cat /proc/kgraft_testmod)"; return ;; esac
    unload shadow_counter || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}
run engine_module_objects

# 11. Stacking: a kgraft patch on functions another kgraft patch holds takes them over through
# a transition (universe 0 runs the older patch's code), the older patch cannot be taken off
# first, and taking the newer one off gives the functions back. Under the hammer, pair_v3 on
# pair_v2 mixes no keys, going on or coming off.
stacked() { load kgraft/pair_v2 && load kgraft/pair_v3 && sleep 1 && unload pair_v3 && unload pair_v2; }
scenario_engine_stacking() {
    load kgraft/cmdline_banner || return
    load kgraft/c_banner || return
    grep -q '^kgraft: c_banner active (C)' /proc/cmdline || { echo "the newer patch is not active: $(head -n 1 /proc/cmdline)"; return; }
    echo 0 > "$(pd cmdline_banner)/enabled" 2>/dev/null && { echo "the older patch was taken off under the newer"; return; }
    dmesg | grep -q 'kgraft: cmdline_banner: cannot be taken off before c_banner' || { echo "no word of the refusal"; return; }
    rmmod cmdline_banner 2>/dev/null && { echo "the older module was removed under the newer"; return; }
    unload c_banner || return
    grep -q '^kgraft: cmdline_banner active' /proc/cmdline || { echo "the older patch did not get the function back: $(head -n 1 /proc/cmdline)"; return; }
    unload cmdline_banner || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    dmesg | grep -qE 'keeps its ftrace handler|did not take its direct call back|would not yield' && { echo "a handover failed: $(dmesg | grep -E 'keeps its|did not take|would not' | head -n 1)"; return; }
    k0=$(spin_mismatches)
    out="$(hammered stacked)"; echo "$out" | grep -v '^calls='
    k1=$(spin_mismatches)
    echo "KGRAFT-PAIR kgraft engine, pair_v3 stacked on pair_v2: $(echo "$out" | grep '^calls='); kernel thread mismatches=$((k1 - k0))"
    echo "$out" | grep -q ' mismatches=0 failures=0' || { echo "stacked: mismatches"; return; }
    [ "$k1" = "$k0" ] || { echo "stacked: the kernel thread saw $((k1 - k0)) mismatches"; return; }
    echo ok
}
run engine_stacking

dmesg | grep -E 'BUG|WARNING|Oops|Call Trace' | head -n 20
echo "KGRAFT-DONE failed:${FAILED:- none}"
poweroff -f
