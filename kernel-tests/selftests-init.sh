#!/bin/sh
# The /init of the selftests initramfs (built by selftests.sh): runs upstream's livepatch
# selftests, unchanged, as the kselftest runner does (each script from its own directory, its
# exit status the verdict), then compares the kernel log of the sample livepatch-callbacks-demo
# with its `.kgp` port's. Prints on the console:
#   KGRAFT-ST-OUT <script>: <line>       each line the script printed
#   KGRAFT-ST-CASE <script> PASS|FAIL <case>   one per `TEST: <case> ...` line
#   KGRAFT-ST-SCRIPT <script> rc=<status>
#   KGRAFT-DEMO-C <line>, KGRAFT-DEMO-KGP <line>, KGRAFT-DEMO same|differs|failed: <why>
#   KGRAFT-ST-DONE
# and powers the machine off.

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
export PATH=/bin:/sbin
export TMPDIR=/tmp
# The console may start with terminal escapes: begin on a fresh line.
echo

for t in $(cat /selftests/livepatch/order); do
    (cd /selftests/livepatch && ./"$t" > /tmp/st.out 2>&1)
    rc=$?
    sed "s/^/KGRAFT-ST-OUT $t: /" /tmp/st.out
    # `start_test` prints "TEST: NAME ... " and `check_result` "ok" on the same line; a case
    # that died prints its error after it instead.
    grep '^TEST: ' /tmp/st.out | while read -r line; do
        name=${line#TEST: }
        name=${name%% ... *}
        case "$line" in
            *' ... ok') echo "KGRAFT-ST-CASE $t PASS $name" ;;
            *) echo "KGRAFT-ST-CASE $t FAIL $name" ;;
        esac
    done
    echo "KGRAFT-ST-SCRIPT $t rc=$rc"
done

# The callbacks demo: the same steps with the C sample (/m/c) and its port (/m), each run's
# kernel log kept (timestamps off, the kernel's taint notices out, which come once per boot).
LP=/sys/kernel/livepatch
until_true() { # tries "$@" every 0.1 s for 60 s
    i=0
    while ! "$@"; do
        i=$((i + 1)); [ $i -le 600 ] || return 1
        sleep 0.1
    done
}
is_dir() { [ -d "$1" ]; }
is_gone() { [ ! -e "$1" ]; }
is_value() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
demo_load() { # dir, args: loads the demo and waits for its transition
    insmod "$1/livepatch_callbacks_demo.ko" $2 || return 1
    until_true is_value $LP/livepatch_callbacks_demo/transition 0
}
demo_off() { # disables the demo and removes its module
    echo 0 > $LP/livepatch_callbacks_demo/enabled
    until_true is_gone $LP/livepatch_callbacks_demo || return 1
    rmmod livepatch_callbacks_demo
}
demo_steps() { # dir of the demo module
    d=$1
    # The target module first, then the patch; off in the same order.
    insmod /m/livepatch_callbacks_mod.ko && demo_load $d && demo_off && rmmod livepatch_callbacks_mod || return 1
    # The patch first: the module's callbacks run when it loads and when it goes.
    demo_load $d && insmod /m/livepatch_callbacks_mod.ko && rmmod livepatch_callbacks_mod && demo_off || return 1
    # pre_patch refuses the module that loads later...
    demo_load $d || return 1
    echo -19 > /sys/module/livepatch_callbacks_demo/parameters/pre_patch_ret
    insmod /m/livepatch_callbacks_mod.ko 2>/dev/null && return 1
    demo_off || return 1
    # ...and the patch itself.
    insmod /m/livepatch_callbacks_mod.ko || return 1
    insmod $d/livepatch_callbacks_demo.ko pre_patch_ret=-19 2>/dev/null && return 1
    rmmod livepatch_callbacks_mod || return 1
    # busymod's work function, replaced when the module loads after the patch.
    demo_load $d && insmod /m/livepatch_callbacks_busymod.ko || return 1
    sleep 1
    rmmod livepatch_callbacks_busymod && demo_off || return 1
    # busymod sleeps in the function the patch replaces: the transition waits for it, and a
    # module loading meanwhile gets only its pre_patch callback.
    insmod /m/livepatch_callbacks_busymod.ko sleep_secs=8 || return 1
    sleep 1
    insmod $d/livepatch_callbacks_demo.ko || return 1
    until_true is_value $LP/livepatch_callbacks_demo/transition 1 || return 1
    insmod /m/livepatch_callbacks_mod.ko && rmmod livepatch_callbacks_mod || return 1
    until_true is_value $LP/livepatch_callbacks_demo/transition 0 || return 1
    demo_off && rmmod livepatch_callbacks_busymod
}
demo_log() { # dir of the demo module: runs the steps, prints the log they left
    n=$(dmesg | wc -l)
    demo_steps "$1" || { echo "the steps failed with $1/livepatch_callbacks_demo.ko"; return 1; }
    dmesg | tail -n +$((n + 1)) | sed 's/^\[[ 0-9.]*\] //' | grep -v 'taint' \
        | grep -E 'livepatch|callbacks|busymod'
}
if c="$(demo_log /m/c)" && k="$(demo_log /m)"; then
    echo "$c" | sed 's/^/KGRAFT-DEMO-C /'
    echo "$k" | sed 's/^/KGRAFT-DEMO-KGP /'
    if [ "$c" = "$k" ]; then echo "KGRAFT-DEMO same"; else echo "KGRAFT-DEMO differs"; fi
else
    echo "KGRAFT-DEMO failed: $(echo "$c$k" | tail -n 1)"
fi

echo "KGRAFT-ST-DONE"
poweroff -f
