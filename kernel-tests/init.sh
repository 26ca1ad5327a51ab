#!/bin/sh
# The /init of the test initramfs: runs the scenarios that /scenarios (kernel-tests/scenarios)
# lists, in its order, on the booted kernel and prints one verdict line per scenario on the
# console ("KGRAFT-TEST <name> PASS" or "... FAIL: <why>"), "KGRAFT-TIME <patch> <ms>" from
# insmod to the end of each transition, and "KGRAFT-DONE". Scenario NAME is the function
# scenario_NAME below, which ends with "ok" when everything held. The harness (run.sh) reads
# these lines; the machine powers off at the end.

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
export PATH=/bin
. /guest.sh


# Runs the commands of the book's transcript /book/$1 (book/src/transcripts/$1: its "# " and
# "$ " lines) and prints what each printed, on standard output and on the console as
# "KGRAFT-BOOK-CMD $1 <command line>" and "KGRAFT-BOOK $1 <line>", which
# kgraftc/tests/kernel_qemu.rs compares with the file.
book() {
    grep -E '^[#$] ' "/book/$1" > /tmp/book.cmds
    while IFS= read -r line <&5; do
        echo "KGRAFT-BOOK-CMD $1 $line" >&4
        sh -c "${line#??}" < /dev/null > /tmp/book.out 2>&1
        cat /tmp/book.out
        sed "s|^|KGRAFT-BOOK $1 |" /tmp/book.out >&4
    done 5< /tmp/book.cmds
}

K=/bin/kgraftc
export TERM=dumb
# The console, for the lines a scenario prints there itself (its standard output is captured).
exec 4>&1

# The console may start with terminal escapes: begin on a fresh line.
echo
ORIG="$(cat /proc/cmdline)"
insmod /m/kgraft_testmod.ko || echo "insmod kgraft_testmod failed"

# The command-line banner: vmlinux's cmdline_proc_show replaced, then restored.
scenario_cmdline_banner() {
    load cmdline_banner || return
    out="$(cat /proc/cmdline)"
    want="$(printf 'kgraft: cmdline_banner active\n%s' "$ORIG")"
    [ "$out" = "$want" ] || { echo "patched /proc/cmdline: $out"; return; }
    [ "$(show "$(pd cmdline_banner)/transition")" = 0 ] || { echo "transition not 0"; return; }
    ! klp || [ "$(show $LP/cmdline_banner/vmlinux/patched)" = 1 ] || { echo "vmlinux/patched: $(show $LP/cmdline_banner/vmlinux/patched)"; return; }
    ! klp || [ -d "$LP/cmdline_banner/vmlinux/cmdline_proc_show,1" ] || { echo "no sysfs entry for cmdline_proc_show"; return; }
    klp || grep -qx 'vmlinux:cmdline_proc_show' "$(pd cmdline_banner)/functions" || { echo "functions: $(show "$(pd cmdline_banner)/functions")"; return; }
    # Kernels that show the replace flag (newer than some 6.1 builds) must show it right.
    case "$(show $LP/cmdline_banner/replace)" in 0|absent) ;; *) echo "replace flag set"; return ;; esac
    unload cmdline_banner || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    grep -q '^cmdline_banner ' /proc/modules && { echo "module still loaded"; return; }
    echo ok
}

# Shadow data and callbacks: kgt_describe in the test module counts reads per device.
scenario_shadow_callbacks() {
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "before: $(cat /proc/kgraft_testmod)"; return; }
    load shadow_counter || return
    a="$(cat /proc/kgraft_testmod)"; b="$(cat /proc/kgraft_testmod)"
    [ "$a" = "kgt alpha v2 reads=1" ] && [ "$b" = "kgt alpha v2 reads=2" ] || { echo "patched: '$a' '$b'"; return; }
    ! klp || [ "$(show $LP/shadow_counter/kgraft_testmod/patched)" = 1 ] || { echo "kgraft_testmod/patched not 1"; return; }
    dmesg | grep -q 'shadow_counter pre_patch' || { echo "no pre_patch in the log"; return; }
    dmesg | grep -q 'shadow_counter post_patch' || { echo "no post_patch in the log"; return; }
    unload shadow_counter || return
    dmesg | grep -q 'shadow_counter pre_unpatch' || { echo "no pre_unpatch in the log"; return; }
    dmesg | grep -q 'shadow_counter post_unpatch' || { echo "no post_unpatch in the log"; return; }
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    # The shadow data was freed with the patch: a new load counts from 1 again.
    load shadow_counter || return
    a="$(cat /proc/kgraft_testmod)"
    [ "$a" = "kgt alpha v2 reads=1" ] || { echo "shadow data survived the patch: '$a'"; return; }
    unload shadow_counter || return
    echo ok
}

# Atomic replace: version 2 (replace_all) takes over from version 1, then goes.
scenario_atomic_replace() {
    load cmdline_banner || return
    load cmdline_banner_v2 || return
    out="$(cat /proc/cmdline)"
    want="$(printf 'kgraft: cmdline_banner_v2 active\n%s' "$ORIG")"
    [ "$out" = "$want" ] || { echo "after v2: $out"; return; }
    case "$(show $LP/cmdline_banner_v2/replace)" in 1|absent) ;; *) echo "v2 replace flag not set"; return ;; esac
    kgt gone cmdline_banner || { echo "v1 was not replaced"; return; }
    unload cmdline_banner || return
    [ "$(cat /proc/cmdline)" = "$want" ] || { echo "removing v1 changed the output"; return; }
    unload cmdline_banner_v2 || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}

# A module target loaded after the patch: the core patches it as it comes.
scenario_module_late() {
    rmmod kgraft_testmod || { echo "rmmod kgraft_testmod failed"; return; }
    load shadow_counter || return
    ! klp || [ "$(show $LP/shadow_counter/kgraft_testmod/patched)" = 0 ] || { echo "absent module shown patched"; return; }
    insmod /m/kgraft_testmod.ko || { echo "insmod kgraft_testmod failed"; return; }
    a="$(cat /proc/kgraft_testmod)"
    [ "$a" = "kgt alpha v2 reads=1" ] || { echo "late module not patched: '$a'"; return; }
    ! klp || [ "$(show $LP/shadow_counter/kgraft_testmod/patched)" = 1 ] || { echo "kgraft_testmod/patched not 1"; return; }
    unload shadow_counter || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}

# Consistency under load: one patch changing both functions of a pair gives no mismatched
# pair; two patches, one function each, do (so this test can fail).
together() { load pair_v2 && sleep 1 && unload pair_v2; }
apart() { load pair_encode_only && sleep 1 && load pair_decode_only && sleep 1 && unload pair_decode_only && unload pair_encode_only; }
scenario_consistency() {
    one="$(hammered together)"; echo "$one" | grep -v '^calls='
    echo "KGRAFT-PAIR one patch (pair_v2): $(echo "$one" | grep '^calls=')"
    two="$(hammered apart)"; echo "$two" | grep -v '^calls='
    echo "KGRAFT-PAIR two patches (pair_encode_only, pair_decode_only): $(echo "$two" | grep '^calls=')"
    echo "$one" | grep -q ' mismatches=0 failures=0' || { echo "one patch: mismatches"; return; }
    echo "$two" | grep -q 'calls=' || { echo "two patches: hammer did not run"; return; }
    echo "$two" | grep -q ' mismatches=0 ' && { echo "two patches: no mismatches seen"; return; }
    echo "$one" | grep -q '^calls=' || { echo "one patch: hammer did not run"; return; }
    echo ok
}

# A patch naming a symbol the kernel lacks fails to load and changes nothing.
scenario_broken_extern() {
    insmod /m/broken_extern.ko 2>/dev/null && { echo "insmod succeeded"; return; }
    dmesg | grep -q "symbol 'kgraft_no_such_symbol' not found" || { echo "no error in the kernel log"; return; }
    [ -e "$(pd broken_extern)" ] && { echo "patch registered"; return; }
    grep -q '^broken_extern ' /proc/modules && { echo "module loaded"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "/proc/cmdline changed"; return; }
    echo ok
}

# A C body: the banner from C, with a `c { }` helper and Rust callbacks calling a helper fn.
scenario_c_banner() {
    load c_banner || return
    out="$(cat /proc/cmdline)"
    want="$(printf 'kgraft: c_banner active (C)\n%s' "$ORIG")"
    [ "$out" = "$want" ] || { echo "patched /proc/cmdline: $out"; return; }
    dmesg | grep -q 'kgraft: c_banner post_patch' || { echo "no post_patch in the log"; return; }
    unload c_banner || return
    dmesg | grep -q 'kgraft: c_banner post_unpatch' || { echo "no post_unpatch in the log"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}

# kpatch's meminfo-string: the kernel's own meminfo_proc_show with one line changed, in C,
# using unexported symbols (livepatch relocations, or the kgraft engine's own table).
scenario_meminfo_string() {
    grep -q '^MemTotal:' /proc/meminfo || { echo "before: no MemTotal"; return; }
    load meminfo_string || return
    grep -q '^MemTOTAL:' /proc/meminfo || { echo "patched: no MemTOTAL: $(head -n 1 /proc/meminfo)"; return; }
    grep -q '^MemTotal:' /proc/meminfo && { echo "patched: MemTotal still shown"; return; }
    # The rest of the file is the original's: every line the kernel shows is there.
    n="$(wc -l < /proc/meminfo)"
    [ "$n" -ge 40 ] || { echo "patched: only $n lines"; return; }
    grep -q '^VmallocUsed:' /proc/meminfo || { echo "patched: no VmallocUsed"; return; }
    unload meminfo_string || return
    grep -q '^MemTotal:' /proc/meminfo || { echo "not restored: $(head -n 1 /proc/meminfo)"; return; }
    [ "$(wc -l < /proc/meminfo)" = "$n" ] || { echo "line count changed on restore"; return; }
    echo ok
}

# The patches `kgraftc from-diff` made from the fixes in kernel-tests/fixes (run.sh): each loaded
# alone, its fixed behaviour checked, unloaded, the original behaviour back.
scenario_from_diff() {
    load fd/cmdline_prefix || return
    [ "$(cat /proc/cmdline)" = "fixed=1 $ORIG" ] || { echo "cmdline_prefix: $(cat /proc/cmdline)"; return; }
    unload cmdline_prefix || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "cmdline_prefix not undone: $(cat /proc/cmdline)"; return; }

    # A function the fix adds, in the patch module.
    load fd/cmdline_new_function || return
    [ "$(cat /proc/cmdline)" = "fix-banner $ORIG" ] || { echo "cmdline_new_function: $(cat /proc/cmdline)"; return; }
    unload cmdline_new_function || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "cmdline_new_function not undone"; return; }

    # An inlined static helper copied, unexported symbols by relocation.
    load fd/meminfo_label || return
    grep -q '^MemTotalFixed: ' /proc/meminfo || { echo "meminfo_label: $(head -n 1 /proc/meminfo)"; return; }
    n="$(wc -l < /proc/meminfo)"
    unload meminfo_label || return
    grep -q '^MemTotal: ' /proc/meminfo || { echo "meminfo_label not undone"; return; }
    [ "$(wc -l < /proc/meminfo)" = "$n" ] || { echo "meminfo_label: line count changed"; return; }

    # New data the fix adds: the patch's own counter, counting each read.
    load fd/meminfo_counter || return
    a="$(grep '^MeminfoReads:' /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
    b="$(grep '^MeminfoReads:' /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
    [ -n "$a" ] && [ "$b" = "$((a + 1))" ] || { echo "meminfo_counter: reads $a then $b"; return; }
    unload meminfo_counter || return
    grep -q '^MeminfoReads:' /proc/meminfo && { echo "meminfo_counter not undone"; return; }

    # A function with a static local (`firsttime`), bound to the kernel's own storage: the fix
    # narrows the time zone range from 15 to 14 hours.
    [ "$(kgt settz 870)" = ok ] || { echo "before: 14.5 h refused"; return; }
    load fd/settimeofday_tz_range || return
    r="$(kgt settz 870)"
    [ "$r" = EINVAL ] || { echo "settimeofday_tz_range: 14.5 h gave $r"; return; }
    [ "$(kgt settz 60)" = ok ] || { echo "settimeofday_tz_range: 1 h refused"; return; }
    unload settimeofday_tz_range || return
    [ "$(kgt settz 870)" = ok ] || { echo "settimeofday_tz_range not undone"; return; }
    kgt settz 0 > /dev/null

    # kernel/fork.c's mm_alloc, which every exec calls: the kernel's mm_cachep (through the
    # file's allocate_mm macro) and its tracepoints, bound by symbol.
    load fd/mm_alloc_fatal_signal || return
    [ -n "$(kgt now)" ] || { echo "mm_alloc_fatal_signal: exec of kgt failed"; return; }
    unload mm_alloc_fatal_signal || return
    # __nf_ip6_route's read-only static locals, copied.
    load fd/netfilter_null_flow || return
    unload netfilter_null_flow || return

    # One fix of three files, a C unit each: kernel_clone numbers each new task in a shadow
    # variable, /proc/PID/status shows it (each grep is a new task), do_exit frees it. Built
    # for the livepatch core only (run.sh says why).
    if klp; then
        serial() { sh -c 'grep "^fork_serial:" /proc/self/status' | cut -f2; }
        [ -z "$(serial)" ] || { echo "fork_serial before the patch"; return; }
        load fd/shadow_fork_serial || return
        a="$(serial)"
        b="$(serial)"
        [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] || { echo "shadow_fork_serial: serials '$a' then '$b'"; return; }
        grep -q '^fork_serial:' /proc/1/status && { echo "shadow_fork_serial: init, older than the patch, has one"; return; }
        unload shadow_fork_serial || return
        [ -z "$(serial)" ] || { echo "shadow_fork_serial not undone"; return; }
    fi

    # A system call's SYSCALL_DEFINE body, replaced in every entry: uname's version is marked.
    v="$(uname -v)"
    load fd/uname_version_mark || return
    [ "$(uname -v)" = "$v +uname-fix" ] || { echo "uname_version_mark: $(uname -v)"; return; }
    unload uname_version_mark || return
    [ "$(uname -v)" = "$v" ] || { echo "uname_version_mark not undone: $(uname -v)"; return; }
    # The same kind of fix written for kpatch-build (its header, KPATCH_SYSCALL_DEFINE1).
    load fd/uname_kpatch_style || return
    [ "$(uname -v)" = "$v +kp" ] || { echo "uname_kpatch_style: $(uname -v)"; return; }
    unload uname_kpatch_style || return
    [ "$(uname -v)" = "$v" ] || { echo "uname_kpatch_style not undone: $(uname -v)"; return; }

    # Names other files share: mode_show, replaced at its position in kallsyms (with type_show,
    # which the kernel inlined into it), and the kernel's sig_enforce, bound by position.
    m="$(cat /sys/kernel/reboot/mode)"
    t="$(cat /sys/kernel/reboot/type)"
    load fd/reboot_mode_type || return
    [ "$(cat /sys/kernel/reboot/mode)" = "$m $t" ] || { echo "reboot_mode_type: $(cat /sys/kernel/reboot/mode)"; return; }
    unload reboot_mode_type || return
    [ "$(cat /sys/kernel/reboot/mode)" = "$m" ] || { echo "reboot_mode_type not undone"; return; }
    load fd/module_sig_reason || return
    load fd/cmdline_prefix || return
    dmesg | grep -q 'module_sig_check: .* (enforced: 0)' || { echo "module_sig_reason: no message at insmod"; return; }
    unload cmdline_prefix || return
    unload module_sig_reason || return

    # A helper the fix adds to include/linux/seq_file.h, called by fs/proc/version.c.
    load fd/version_header_helper || return
    [ "$(sed -n 2p /proc/version)" = "fixed: version-header" ] || { echo "version_header_helper: $(cat /proc/version)"; return; }
    unload version_header_helper || return
    [ "$(wc -l < /proc/version)" = 1 ] || { echo "version_header_helper not undone: $(cat /proc/version)"; return; }

    # A fix of a module's function: xfs's statistics end with the fix's line while it is on.
    for m in /m/x/*.ko; do insmod "$m" || { echo "insmod $m failed"; return; }; done
    stats=/sys/fs/xfs/stats/stats
    [ "$(tail -n 1 $stats)" != "fixed 1" ] || { echo "xfs_stats_mark: fixed before the patch"; return; }
    load fd/xfs_stats_mark || return
    [ "$(tail -n 1 $stats)" = "fixed 1" ] || { echo "xfs_stats_mark: $(tail -n 1 $stats)"; return; }
    unload xfs_stats_mark || return
    [ "$(tail -n 1 $stats)" != "fixed 1" ] || { echo "xfs_stats_mark not undone"; return; }
    rmmod xfs || { echo "rmmod xfs failed"; return; }
    echo ok
}

# Kernel structures read by field name, with types generated from the kernel's BTF.
scenario_kernel_fields() {
    load kernel_fields || return
    first="$(head -n 1 /proc/cmdline)"
    want="kgraft-fields: release=$(uname -r) mem_unit=4096 ram=yes buf=yes"
    [ "$first" = "$want" ] || { echo "patched first line: $first (want: $want)"; return; }
    [ "$(sed -n 2p /proc/cmdline)" = "$ORIG" ] || { echo "second line: $(sed -n 2p /proc/cmdline)"; return; }
    unload kernel_fields || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}

# The kernel's shadow-variable samples: livepatch-shadow-fix1 and -fix2 as .kgp ports,
# against upstream's livepatch-shadow-mod; the kernel log must say what the C originals say.
shadow_demo() { # the directory of the fix modules; prints the log's distinct lines, normalised
    n=$(dmesg | wc -l)
    insmod /m/livepatch_shadow_mod.ko || { echo "insmod livepatch_shadow_mod failed"; return 1; }
    sleep 2
    for fix in livepatch_shadow_fix1 livepatch_shadow_fix2; do
        t0=$(kgt now)
        insmod "$1/$fix.ko" || { echo "insmod $1/$fix failed"; return 1; }
        kgt wait "$fix" "$t0" >&2 || return 1
        # fix1 must outlive the dummies allocated before it (12 s), so that it frees its own.
        if [ $fix = livepatch_shadow_fix1 ]; then sleep 17; else sleep 5; fi
    done
    unload livepatch_shadow_fix2 || return 1
    unload livepatch_shadow_fix1 || return 1
    rmmod livepatch_shadow_mod || { echo "rmmod livepatch_shadow_mod failed"; return 1; }
    # Pointers are hashed per boot (or hidden, "(____ptrval____)", until the kernel's random
    # numbers are ready) and counts depend on timing: keep each message's shape.
    # The engines' own lines (the livepatch core's "livepatch: ...", kgraft's "kgraft: NAME:
    # patching ...") are left out: the samples' lines are compared, whichever engine applies
    # the ports. So is the loader's notice on the boot's first livepatch module (a module of
    # the kgraft engine is none), which only one of the two runs may print.
    dmesg | tail -n +$((n + 1)) | sed 's/^\[[^]]*\] //' | grep -E 'dummy|livepatch_shadow' \
        | grep -vE '^livepatch: |^kgraft: livepatch_shadow_fix[12]: |: tainting kernel with TAINT_LIVEPATCH$' \
        | sed -E 's/\(_+ptrval_+\)/P/g; s/[0-9a-f]{8,16}/P/g; s/counter = [0-9]+/counter = N/' | sort -u
}
scenario_shadow_samples() {
    c="$(shadow_demo /m/c)" || { echo "C originals: $c" | tail -n 1; return; }
    k="$(shadow_demo /m)" || { echo "ports: $k" | tail -n 1; return; }
    echo "$c" | sed 's/^/KGRAFT-SHADOW-C /'
    echo "$k" | sed 's/^/KGRAFT-SHADOW-KGP /'
    for want in 'livepatch_fix1_dummy_alloc: dummy @ P, expires @ P' 'livepatch_fix1_dummy_free: dummy @ P leaked!' \
        'livepatch_fix1_dummy_leak_dtor: dummy @ P, prevented leak @ P' 'livepatch_fix2_dummy_free: dummy @ P, check counter = N'; do
        echo "$k" | grep -qF "$want" || { echo "the ports never logged '$want'"; return; }
    done
    [ "$c" = "$k" ] || { echo "the ports' log differs from the C originals' (see KGRAFT-SHADOW lines)"; return; }
    echo ok
}

# Callbacks per object, nothing replaced: vmlinux's and the test module's, also when the
# module loads and goes while the patch is on.
scenario_object_callbacks() {
    m="kgraft_testmod -> [MODULE_STATE_LIVE] Normal state"
    load object_callbacks || return
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
    echo ok
}

# An empty replace_all patch takes the loaded patches off.
scenario_take_all_off() {
    load cmdline_banner || return
    load take_all_off || return
    kgt gone cmdline_banner || { echo "cmdline_banner was not replaced"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "still patched: $(cat /proc/cmdline)"; return; }
    unload cmdline_banner || return
    unload take_all_off || return
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    echo ok
}

# `kgraftc kernel`: refused without root, load with its transition, list, status, a second
# load refused, unload, and the refusal to unload what is not there.
scenario_kgraftc_kernel() {
    mkdir -p /etc
    echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd
    echo 'nogroup:x:65534:' >> /etc/group
    su -s /bin/sh nobody -c "$K kernel load /m/cmdline_banner.ko" > /tmp/k.out 2>&1
    rc=$?; [ $rc = 2 ] && grep -q 'needs root' /tmp/k.out || { echo "without root: exit $rc: $(cat /tmp/k.out)"; return; }
    $K kernel load /m/cmdline_banner.ko > /tmp/k.out 2>&1 || { echo "load: $(cat /tmp/k.out)"; return; }
    grep -q '^cmdline_banner is enabled' /tmp/k.out || { echo "load said: $(cat /tmp/k.out)"; return; }
    grep -q 'kgraft: cmdline_banner active' /proc/cmdline || { echo "not patched: $(cat /proc/cmdline)"; return; }
    $K kernel list > /tmp/k.out 2>&1
    grep -q "^cmdline_banner  *enabled  *$ENGINE  *vmlinux:cmdline_proc_show\$" /tmp/k.out || { echo "list: $(cat /tmp/k.out)"; return; }
    $K kernel status cmdline_banner > /tmp/k.out 2>&1
    grep -q '^  vmlinux: patched$' /tmp/k.out || { echo "status: $(cat /tmp/k.out)"; return; }
    $K kernel load /m/cmdline_banner.ko > /tmp/k.out 2>&1
    rc=$?; [ $rc = 2 ] && grep -q 'already loaded' /tmp/k.out || { echo "second load: exit $rc: $(cat /tmp/k.out)"; return; }
    # The book's "Load" and "Remove" (Patching a real kernel), typed here.
    book real-kernel-status.txt > /tmp/k.out
    grep -q '^cmdline_banner: enabled' /tmp/k.out || { echo "the book's status: $(cat /tmp/k.out)"; return; }
    book real-kernel-unload.txt > /tmp/k.out
    grep -q '^cmdline_banner is unloaded' /tmp/k.out || { echo "the book's unload: $(cat /tmp/k.out)"; return; }
    [ -d "$(pd cmdline_banner)" ] && { echo "sysfs directory left"; return; }
    grep -q '^cmdline_banner ' /proc/modules && { echo "module left"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    $K kernel unload cmdline_banner > /tmp/k.out 2>&1
    rc=$?; [ $rc = 2 ] && grep -q 'no live patch or module named' /tmp/k.out || { echo "unload of nothing: exit $rc"; return; }
    echo ok
}

# Starts a reader of /proc/kgraft_nap_killable and waits until it sleeps inside kgt_nap; sets
# NAPPER. Its sleep is killable: no engine's fake signal ends it (the livepatch core's comes
# after 15 s, the kgraft engine's after one), so it holds a transition up for either engine until
# it is killed, as a task blocked inside a patched function does.
nap() {
    cat /proc/kgraft_nap_killable > /tmp/nap.out &
    NAPPER=$!
    for _ in $(seq 50); do grep -q kgt_nap /proc/$NAPPER/stack 2>/dev/null && return 0; sleep 0.1; done
    echo "the reader never slept in kgt_nap"; return 1
}

# Ends the reader nap() started. A plain kill (SIGTERM) must end its killable sleep at once,
# whatever fake signals the engine sent it meanwhile.
unnap() {
    kill $NAPPER
    for _ in $(seq 30); do grep -q kgt_nap /proc/$NAPPER/stack 2>/dev/null || break; sleep 0.1; done
    if grep -q kgt_nap /proc/$NAPPER/stack 2>/dev/null; then
        kill -9 $NAPPER; wait $NAPPER
        echo "the reader slept on after SIGTERM"; return 1
    fi
    # Its status is the signal's (143): the reader was killed, as it should be.
    wait $NAPPER
    return 0
}

# A task asleep in a replaced function holds the transition up: `kgraftc kernel load`
# names it, and after --timeout reverses the transition and removes the module.
scenario_straggler_timeout() {
    nap || return
    $K kernel load --timeout 3 /m/nap_short.ko > /tmp/k.out 2>&1
    rc=$?; cat /tmp/k.out
    [ $rc = 1 ] || { echo "load with a straggler: exit $rc"; return; }
    grep -q "cat (pid $NAPPER): .*kgt_nap \[kgraft_testmod\]" /tmp/k.out || { echo "the straggler was not named"; return; }
    grep -q 'the transition was reversed and the module removed' /tmp/k.out || { echo "no reversal reported"; return; }
    [ -d "$(pd nap_short)" ] && { echo "sysfs directory left"; return; }
    grep -q '^nap_short ' /proc/modules && { echo "module left"; return; }
    unnap || return
    echo ok
}

# The same transition seen by `kgraftc kernel status`, `signal` (either engine sends its fake
# signal by itself) and finished by `force`; the patch then unloads.
scenario_kgraftc_force() {
    nap || return
    $K kernel load --timeout 60 /m/nap_short.ko > /tmp/load.out 2>&1 &
    loader=$!
    for _ in $(seq 50); do [ "$(cat "$(pd nap_short)/transition" 2>/dev/null)" = 1 ] && break; sleep 0.1; done
    book shipping-transition.txt > /tmp/k.out  # kgraftc kernel status nap_short
    grep -q '^  transition to patched: 1 tasks left$' /tmp/k.out && grep -q "cat (pid $NAPPER)" /tmp/k.out \
        || { echo "status: $(cat /tmp/k.out)"; return; }
    $K kernel signal nap_short > /tmp/k.out 2>&1
    rc=$?; [ $rc = 2 ] && grep -q 'sends the fake signal itself' /tmp/k.out || { echo "signal: exit $rc: $(cat /tmp/k.out)"; return; }
    $K kernel force nap_short > /tmp/k.out 2>&1 || { echo "force: $(cat /tmp/k.out)"; return; }
    grep -q '^WARNING: forcing the transition of nap_short' /tmp/k.out || { echo "no warning: $(cat /tmp/k.out)"; return; }
    dmesg | grep -qE 'livepatch: forcing remaining tasks to the patched state|kgraft: nap_short: forcing the remaining tasks' \
        || { echo "no warning in the kernel log"; return; }
    wait $loader || { echo "the load did not finish: $(cat /tmp/load.out)"; return; }
    [ "$(cat /proc/kgraft_nap)" = 2 ] || { echo "not patched"; return; }
    # The kgraft engine completes a forced transition as any other: with direct calls.
    klp || dmesg | grep -q 'kgraft: nap_short: patching complete' || { echo "no completion in the log"; return; }
    klp || ! dmesg | grep -q 'kgt_nap keeps its ftrace handler' || { echo "no direct call after force"; return; }
    # A forced patching transition leaves the new patch's module removable (either engine keeps
    # the modules of forced removals only).
    $K kernel unload nap_short > /tmp/k.out 2>&1 || { echo "unload: $(cat /tmp/k.out)"; return; }
    [ -d "$(pd nap_short)" ] && { echo "sysfs directory left"; return; }
    grep -q '^nap_short ' /proc/modules && { echo "module left"; return; }
    unnap || return
    echo ok
}

# A package of `kgraftc package`, its maintainer scripts run as dpkg runs them: version 1
# (cmdline_banner) installed and reinstalled, upgraded to version 2 (cmdline_banner_v2, with
# replace_all, which replaces it atomically), then removed. run.sh unpacked both versions, built
# for the run's engine; the scripts find the patches in that engine's sysfs directory.
scenario_package_scripts() {
    P=kgraft-patch-banner
    cp -a /pkg/v1/lib /pkg/v1/usr /
    sh /pkg/v1/DEBIAN/postinst configure > /tmp/p.out 2>&1 || { echo "v1 postinst: $(cat /tmp/p.out)"; return; }
    [ "$(head -n 1 /proc/cmdline)" = "kgraft: cmdline_banner active" ] || { echo "v1 not applied: $(cat /tmp/p.out)"; return; }
    [ "$(cut -d ' ' -f 1 /var/lib/kgraft/$P)" = cmdline_banner ] || { echo "no state after v1"; return; }
    sh /pkg/v1/DEBIAN/postinst configure > /tmp/p.out 2>&1 || { echo "v1 reinstall: $(cat /tmp/p.out)"; return; }
    grep -q 'cmdline_banner is applied' /tmp/p.out || { echo "v1 reinstall: $(cat /tmp/p.out)"; return; }
    # A new build under the same name that the kernel refuses (here a truncated module): the
    # upgrade fails, and the build it unloaded is applied again from the helper's copy.
    ko=$(ls /lib/modules/*/updates/kgraft/cmdline_banner.ko)
    cp "$ko" /tmp/good.ko
    head -c 4096 /tmp/good.ko > "$ko"
    sh /pkg/v1/DEBIAN/postinst configure 1 > /tmp/p.out 2>&1 && { echo "a refused build's postinst succeeded"; return; }
    grep -q 'the previous build of cmdline_banner is applied again' /tmp/p.out || { echo "refused build: $(cat /tmp/p.out)"; return; }
    [ "$(head -n 1 /proc/cmdline)" = "kgraft: cmdline_banner active" ] || { echo "unpatched after a refused build: $(cat /tmp/p.out)"; return; }
    cp /tmp/good.ko "$ko"
    sh /pkg/v1/DEBIAN/prerm upgrade 2 || { echo "v1 prerm upgrade failed"; return; }
    [ "$(cat "$(pd cmdline_banner)/enabled" 2>/dev/null)" = 1 ] || { echo "prerm upgrade unloaded v1"; return; }
    # dpkg unpacks version 2 and removes the files version 1 had alone.
    cp -a /pkg/v2/lib /pkg/v2/usr /
    rm /lib/modules/*/updates/kgraft/cmdline_banner.ko
    sh /pkg/v2/DEBIAN/postinst configure 1 > /tmp/p.out 2>&1 || { echo "v2 postinst: $(cat /tmp/p.out)"; return; }
    [ "$(head -n 1 /proc/cmdline)" = "kgraft: cmdline_banner_v2 active" ] || { echo "v2 not applied: $(cat /tmp/p.out)"; return; }
    [ -d "$(pd cmdline_banner)" ] && { echo "v1 still in sysfs after the upgrade"; return; }
    grep -q '^cmdline_banner ' /proc/modules && { echo "v1 module left after the upgrade"; return; }
    sh /pkg/v2/DEBIAN/prerm remove > /tmp/p.out 2>&1 || { echo "v2 prerm remove: $(cat /tmp/p.out)"; return; }
    [ -d "$(pd cmdline_banner_v2)" ] && { echo "v2 still in sysfs after removal"; return; }
    grep -q '^cmdline_banner_v2 ' /proc/modules && { echo "v2 module left after removal"; return; }
    [ "$(cat /proc/cmdline)" = "$ORIG" ] || { echo "not restored: $(cat /proc/cmdline)"; return; }
    [ -e /var/lib/kgraft/$P ] && { echo "state left after removal"; return; }
    [ -e /var/lib/kgraft/$P.ko ] && { echo "the saved module left after removal"; return; }
    echo ok
}

# System states and a module parameter: v2 takes state 1 over, a lower version is refused, and
# so is a replace_all patch without the state.
# The patches' own log lines, not the kgraft engine's ("kgraft: console_state: patching ...").
stlog() { dmesg | grep -v 'kgraft: console_state' | grep -oE 'console_state(_v2)?: .*' | tail -n "$1" | tr '\n' '|'; }
scenario_system_states() {
    t0=$(kgt now)
    insmod /m/console_state.ko prefix=hello || { echo "insmod console_state failed"; return; }
    kgt wait console_state "$t0" || return
    [ "$(cat /sys/module/console_state/parameters/prefix)" = hello ] || { echo "parameter: $(show /sys/module/console_state/parameters/prefix)"; return; }
    [ "$(stlog 1)" = "console_state: saved loglevel 7, version 1|" ] || { echo "v1: $(stlog 1)"; return; }
    load console_state_v2 || return
    [ "$(stlog 1)" = "console_state_v2: took over loglevel 7 from version 1|" ] || { echo "v2: $(stlog 1)"; return; }
    kgt gone console_state || { echo "console_state was not replaced"; return; }
    unload console_state || return
    # A replace_all patch that does not carry state 1 would drop it: refused.
    insmod /m/cmdline_banner_v2.ko 2>/dev/null && { echo "a replace_all patch without state 1 was accepted"; return; }
    grep -q '^cmdline_banner_v2 ' /proc/modules && { echo "cmdline_banner_v2 left loaded"; return; }
    [ -d $LP/cmdline_banner_v2 ] && { echo "cmdline_banner_v2 left in sysfs"; return; }
    insmod /m/console_state.ko 2>/dev/null && { echo "a lower state version was accepted"; return; }
    unload console_state_v2 || return
    [ "$(stlog 1)" = "console_state_v2: restored loglevel 7|" ] || { echo "v2 off: $(stlog 1)"; return; }
    echo ok
}

# replace syscall: getpriority's x86-64 entry (prio64) and its ia32 entry (prio32).
scenario_syscall() {
    before="$(prio64)"
    load getpriority_syscall || return
    [ "$(prio64)" = "10 14" ] || { echo "x64 entry: $(prio64)"; return; }
    [ "$(prio32)" = "10 14" ] || { echo "ia32 entry: $(prio32)"; return; }
    unload getpriority_syscall || return
    [ "$(prio64)" = "$before" ] || { echo "not restored: $(prio64), was $before"; return; }
    echo ok
}

# A module's own unexported symbol, declared in the `module` block: resolved in that module
# (by the livepatch core, or by the kgraft engine from its own table). With the kgraft engine,
# again when the module goes and comes back; the livepatch core of 6.1 refuses a module that
# comes back then (its relocation targets are not cleared when the module goes, and the loader
# will not write over a non-zero target: fixed upstream in 6.3).
scenario_module_extern() {
    load module_extern || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v3 id=1 same=1" ] || { echo "patched: $(cat /proc/kgraft_testmod)"; return; }
    if ! klp; then
        rmmod kgraft_testmod || { echo "rmmod kgraft_testmod failed"; return; }
        insmod /m/kgraft_testmod.ko || { echo "insmod kgraft_testmod failed"; return; }
        [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v3 id=1 same=1" ] || { echo "after the module came back: $(cat /proc/kgraft_testmod)"; return; }
        # The engine says so each time it resolves the module's symbols: as the patch loads
        # and as the module comes back.
        n=$(dmesg | grep -c 'kgraft: module_extern: symbols of kgraft_testmod resolved')
        [ "$n" = 2 ] || { echo "the engine resolved the module's symbols $n times, not 2"; return; }
    fi
    unload module_extern || return
    [ "$(cat /proc/kgraft_testmod)" = "kgt alpha v1" ] || { echo "not restored: $(cat /proc/kgraft_testmod)"; return; }
    echo ok
}

# A target chosen by its symbol position: the second of the test module's two static
# `kgt_twin`s is replaced, the first is not.
scenario_module_sympos() {
    [ "$(cat /proc/kgraft_twins)" = "first=2 second=3" ] || { echo "before: $(cat /proc/kgraft_twins)"; return; }
    load module_sympos || return
    [ "$(cat /proc/kgraft_twins)" = "first=2 second=21" ] || { echo "patched: $(cat /proc/kgraft_twins)"; return; }
    unload module_sympos || return
    [ "$(cat /proc/kgraft_twins)" = "first=2 second=3" ] || { echo "not restored: $(cat /proc/kgraft_twins)"; return; }
    echo ok
}

# A forced unpatching: a reader asleep in the patch's own kgt_nap holds back the transition to
# the original code, and `kgraftc kernel force` ends it. The forced task may still run the
# patch's code, so with either engine the patch's module stays loaded until the next boot, even
# once the reader is gone. Last in the list: the module stays.
scenario_forced_unpatch() {
    load nap_long || return
    nap || return
    for _ in $(seq 50); do grep -q '\[nap_long\]' /proc/$NAPPER/stack 2>/dev/null && break; sleep 0.1; done
    grep -q '\[nap_long\]' /proc/$NAPPER/stack || { echo "the reader is not asleep in the patch: $(cat /proc/$NAPPER/stack)"; return; }
    echo 0 > "$(pd nap_long)/enabled" || { echo "cannot disable nap_long"; return; }
    sleep 2
    [ "$(cat "$(pd nap_long)/transition")" = 1 ] || { echo "the unpatching did not wait for the reader"; return; }
    $K kernel force nap_long > /tmp/k.out 2>&1 || { echo "force: $(cat /tmp/k.out)"; return; }
    grep -q '^WARNING: forcing the transition of nap_long' /tmp/k.out || { echo "no warning: $(cat /tmp/k.out)"; return; }
    kgt gone nap_long || { echo "the forced unpatching did not end"; return; }
    rmmod nap_long 2>/dev/null && { echo "the module was removed while the reader ran its code"; return; }
    unnap || return
    rmmod nap_long 2>/dev/null && { echo "the module of a forced unpatching was removed"; return; }
    grep -q '^nap_long ' /proc/modules || { echo "the module is gone"; return; }
    echo ok
}

# One scenario per line, "NAME [ARGUMENT...]"; blank lines and "#" comments are skipped. The
# list is read on descriptor 3, so that no scenario reads it as its input.
while read -r name args <&3; do
    case "$name" in ''|'#'*) continue ;; esac
    case " $args " in *" klp-only "*) klp || continue ;; esac
    args=$(echo " $args " | sed 's/ klp-only / /')
    run "$name" $args  # unquoted: the arguments are words
done 3< /scenarios

dmesg | grep -E 'livepatch|kgraft' | sed 's/^/KGRAFT-LOG /'
echo "KGRAFT-DONE failed:${FAILED:- none}"
poweroff -f
