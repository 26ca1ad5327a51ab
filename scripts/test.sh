#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test: the compiler, the macros, the runtime
# in the user-mode host, the kernel target under qemu, and the book.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh all

echo "== cargo fmt --check" >&2
cargo fmt --all --check

echo "== shellcheck" >&2
# The harnesses, the guests' init scripts, the set-up and the packages' maintainer scripts
# (templates whose @NAME@ words kgraftc fills in).
shellcheck -x -P SCRIPTDIR --severity=warning kernel-tests/*.sh scripts/*.sh .ci/run kgraftc/src/package/*.sh

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test" >&2
KGRAFT_QEMU=1 cargo test --workspace --locked

echo "== mdbook build" >&2
mdbook build book
