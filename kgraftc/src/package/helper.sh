#!/bin/sh
# Loads or unloads the live patch @NAME@ of the package @PKG@ (written by kgraftc package).
# Usage: @HELPER@ load|unload
set -u
NAME=@NAME@
RELEASE=@RELEASE@
# What applies the patch: klp (the kernel's livepatch core) or kgraft (kgraft's own engine).
ENGINE=@ENGINE@
KO=/lib/modules/$RELEASE/updates/kgraft/$NAME.ko
LP=/sys/kernel/livepatch
KG=/sys/kernel/kgraft
STATE=/var/lib/kgraft/@PKG@
# A copy of the module last applied, to apply again if a new build of the same name is refused.
SAVED=$STATE.ko
TIMEOUT=${KGRAFT_TIMEOUT:-60}

say() { echo "kgraft: $*" >&2; }

# The sysfs directory of the patch $1: the livepatch core's or the kgraft engine's, whichever
# has it (a previous version may be for the other engine), else the one of this package's engine.
pdir() {
    if [ -d "$LP/$1" ]; then echo "$LP/$1"
    elif [ -d "$KG/$1" ]; then echo "$KG/$1"
    elif [ "$ENGINE" = kgraft ]; then echo "$KG/$1"
    else echo "$LP/$1"; fi
}

# Whether the patch $1 is applied, or on its way to it.
applied() { [ "$(cat "$(pdir "$1")/enabled" 2>/dev/null)" = 1 ]; }

# Whether the engine let go of the patch $1, so that its module can go: the livepatch core
# removes the patch's directory; the kgraft engine's stays until the module goes, and reads
# enabled 0 with no transition.
let_go() {
    d=$(pdir "$1")
    case "$d" in
        "$LP"/*) [ ! -d "$d" ] ;;
        *) [ "$(cat "$d/enabled" 2>/dev/null || echo 0)" = 0 ] && [ "$(cat "$d/transition" 2>/dev/null || echo 0)" = 0 ] ;;
    esac
}

# Waits until the transition of the patch $1 ends; fails after TIMEOUT seconds.
wait_transition() {
    i=0
    while [ "$(cat "$(pdir "$1")/transition" 2>/dev/null || echo 0)" = 1 ]; do
        i=$((i + 1)); [ $i -ge $((TIMEOUT * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

# Waits until the engine let go of the patch $1.
wait_gone() {
    i=0
    while ! let_go "$1"; do i=$((i + 1)); [ $i -ge 100 ] && return 1; sleep 0.1; done
    return 0
}

# Removes the module $1, retrying while the kernel still holds it.
remove_module() {
    i=0
    while grep -q "^$1 " /proc/modules; do
        rmmod "$1" 2>/dev/null && return 0
        i=$((i + 1)); [ $i -ge 50 ] && return 1
        sleep 0.1
    done
    return 0
}

# Disables the patch $1, waits for its transition (reversing it after TIMEOUT: the patch then
# stays applied) and removes its module.
unload_patch() {
    if applied "$1"; then
        echo 0 > "$(pdir "$1")/enabled" || return 1
        if ! wait_transition "$1"; then
            echo 1 > "$(pdir "$1")/enabled"
            wait_transition "$1"
            say "$1 could not be disabled within $TIMEOUT s (tasks sleep in its functions); it stays applied"
            return 1
        fi
    fi
    wait_gone "$1" || { say "the kernel still holds the patch $1"; return 1; }
    remove_module "$1" || { say "cannot remove the module $1"; return 1; }
}

record() { mkdir -p "${STATE%/*}" && echo "$NAME $1" > "$STATE"; }

# Loads the module file $1 and waits for its transition; reverses it and removes the module
# when it does not end within TIMEOUT.
apply() {
    insmod "$1" || { say "the kernel refused $1 (dmesg says why)"; return 1; }
    if ! wait_transition "$NAME"; then
        say "$NAME did not take effect within $TIMEOUT s (tasks sleep in its functions); reversing"
        echo 0 > "$(pdir "$NAME")/enabled"
        wait_transition "$NAME"; wait_gone "$NAME"; remove_module "$NAME"
        return 1
    fi
}

load() {
    if [ "$(uname -r)" != "$RELEASE" ]; then
        say "$NAME is for Linux $RELEASE, this is $(uname -r): not loaded"
        return 0
    fi
    # The kgraft engine is in the module; the livepatch core is the kernel's.
    [ "$ENGINE" = kgraft ] || [ -d $LP ] || { say "this kernel has no livepatch support"; return 1; }
    sum=$(sha256sum "$KO" | cut -d ' ' -f 1)
    old=""; oldsum=""; replaces=""
    [ -r "$STATE" ] && read -r old oldsum < "$STATE"
    if applied "$NAME"; then
        if [ "$old" != "$NAME" ] || [ "$oldsum" = "$sum" ]; then
            say "$NAME is applied"
            record "$sum"
            return 0
        fi
        say "a new build of $NAME replaces the loaded one: the kernel is unpatched in between (give a new version its own patch name, with replace_all, to replace it atomically)"
        unload_patch "$NAME" || return 1
        replaces=1
    fi
    remove_module "$NAME"
    if ! apply "$KO"; then
        # The old build was unloaded for this one: the kernel is not left unpatched.
        if [ -n "$replaces" ] && [ -r "$SAVED" ] && apply "$SAVED"; then
            say "the previous build of $NAME is applied again"
        fi
        return 1
    fi
    # The previous version, under another name: replaced already when this one has replace_all,
    # else still applied; either way its module goes.
    if [ -n "$old" ] && [ "$old" != "$NAME" ]; then
        unload_patch "$old" || say "could not remove the previous version, $old"
    fi
    record "$sum"
    cp "$KO" "$SAVED.new" && mv "$SAVED.new" "$SAVED" || say "cannot keep a copy of $KO in $SAVED"
    say "$NAME is applied"
}

unload() {
    name=$NAME
    [ -r "$STATE" ] && read -r name rest < "$STATE"
    if [ -d "$(pdir "$name")" ] || grep -q "^$name " /proc/modules; then
        unload_patch "$name" || return 1
        say "$name is removed"
    fi
    rm -f "$STATE" "$SAVED"
}

case "${1:-}" in
    load) load ;;
    unload) unload ;;
    *) echo "usage: $0 load|unload" >&2; exit 2 ;;
esac
