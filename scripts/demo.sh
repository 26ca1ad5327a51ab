#!/usr/bin/env bash
# The main job: build a live patch, apply it to a running user-mode host under load, watch the
# behaviour change, take the patch off again and watch the old behaviour come back.
#
#   bash scripts/demo.sh
#
# The host is a small kernel-like program (C compiled with the kernel's tracing flags) whose
# threads keep making "system calls" the whole time; nothing is stopped or restarted.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh host

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building kgraftc and the host"
cargo build --release --quiet -p kgraftc --bin kgraftc -p kgraft-host --bin kgraft-host
kgraftc=target/release/kgraftc
host=target/release/kgraft-host

work=$(mktemp -d)
export KGRAFT_HOST_SOCKET="$work/host.sock"
host_pid=
cleanup() {
    if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
        "$kgraftc" host stop >/dev/null 2>&1 || kill "$host_pid" 2>/dev/null || true
        wait "$host_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "1. kgraftc build --target host patches/cmdline_banner.kgp"
"$kgraftc" build --target host patches/cmdline_banner.kgp -o "$work/cmdline_banner.so"

step "2. Starting the host under load (busy workers, sleeping threads, a kernel thread)"
"$host" --workers 2 --sleepers 2 --kthreads 1 &
host_pid=$!
for _ in $(seq 100); do
    [ -S "$KGRAFT_HOST_SOCKET" ] && break
    sleep 0.05
done
"$kgraftc" host status

step "3. Before: cat /proc/cmdline (in the host)"
"$kgraftc" host read cmdline

step "4. kgraftc host load cmdline_banner.so (live: the workload keeps running)"
"$kgraftc" host load "$work/cmdline_banner.so"

step "5. After: cat /proc/cmdline"
"$kgraftc" host read cmdline
"$kgraftc" host status

step "6. kgraftc host unload cmdline_banner"
"$kgraftc" host unload cmdline_banner

step "7. The original behaviour is back: cat /proc/cmdline"
"$kgraftc" host read cmdline
"$kgraftc" host status

step "8. Stopping the host"
"$kgraftc" host stop
wait "$host_pid"
host_pid=
echo "done."
