# shellcheck shell=sh
# What the /init scripts of the qemu harnesses share (init.sh, engine-init.sh), sourced from
# /guest.sh: the patches' sysfs files for either engine, loading and unloading a patch, the
# verdict lines, running a scenario, the pair hammer.

LP=/sys/kernel/livepatch
# The engine the samples were built for (/engine, from the harness): klp, the livepatch core,
# or kgraft.
ENGINE=$(cat /engine 2>/dev/null || echo klp)
# Whether the livepatch core applies the samples: its sysfs files say more than the kgraft
# engine's, and the scenarios check them then.
klp() { [ "$ENGINE" = klp ]; }
# The sysfs directory of the patch $1 (enabled, transition, ...): the one that exists (the C
# samples are the livepatch core's in either run), else the one the samples' engine makes.
pd() {
    if [ -d "$LP/$1" ]; then echo "$LP/$1"
    elif [ -d "/sys/kernel/kgraft/$1" ]; then echo "/sys/kernel/kgraft/$1"
    elif klp; then echo "$LP/$1"
    else echo "/sys/kernel/kgraft/$1"; fi
}

FAILED=""
verdict() { # name, reason ("" = pass)
    if [ -z "$2" ]; then echo "KGRAFT-TEST $1 PASS"; else echo "KGRAFT-TEST $1 FAIL: $2"; FAILED="$FAILED $1"; fi
}

# Inserts the patch module /m/$1.ko and waits for its transition; prints the time it took.
load() { # /m/$1.ko: NAME, or DIR/NAME
    t0=$(kgt now)
    insmod "/m/$1.ko" || { echo "insmod $1 failed"; return 1; }
    kgt wait "${1##*/}" "$t0" || return 1
    [ "$(cat "$(pd "${1##*/}")/enabled")" = 1 ] || { echo "${1##*/} is not enabled"; return 1; }
}

# Disables the patch $1, waits until the core let go of it, and removes its module.
unload() {
    if [ -d "$(pd "$1")" ]; then
        echo 0 > "$(pd "$1")/enabled" || return 1
        kgt gone "$1" || return 1
    fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        rmmod "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "rmmod $1 failed"; return 1
}

# Prints the value of the sysfs file $1, or "absent".
show() { if [ -e "$1" ]; then cat "$1"; else echo absent; fi; }

# Runs the scenario $1 (the function scenario_$1, given the rest of the line as arguments) and
# prints its verdict: the last line of its output is "ok", or the reason it failed.
run() {
    name=$1
    shift
    type "scenario_$name" > /dev/null 2>&1 || { verdict "$name" "no function scenario_$name in the init script"; return; }
    r="$("scenario_$name" "$@" 2>&1 | tail -n 80)"
    echo "$r" | grep -v '^ok$'
    verdict "$name" "$(echo "$r" | grep -q '^ok$' || echo "$r" | tail -n 1)"
}

# Consistency under load: runs the commands given while the pair is hammered; prints the
# hammer's counts.
hammered() {
    rm -f /tmp/stop
    kgt hammer /proc/kgraft_pair /tmp/stop > /tmp/hammer &
    hp=$!
    sleep 1
    "$@"
    sleep 1
    touch /tmp/stop
    wait $hp
    cat /tmp/hammer
}

# The last $1 lines of the object_callbacks sample's log, joined by '|'.
cblog() { dmesg | grep -o 'object_callbacks .*' | tail -n "$1" | tr '\n' '|'; }
