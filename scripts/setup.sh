#!/usr/bin/env bash
# The README's first command: prepares a fresh machine (Debian 12, root) and runs a real job.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages "${TEST_PACKAGES[@]}"
echo "==> building rbuild (release)"
cargo build --release --quiet --bin rbuild
RBUILD=target/release/rbuild
echo "==> $($RBUILD --version)"
echo "==> rbuild parse --dump examples/hello/Dockerfile"
$RBUILD parse --dump examples/hello/Dockerfile
echo "==> rbuild parse --json examples/hello/Dockerfile (stages)"
$RBUILD parse --json examples/hello/Dockerfile | head -c 2000; echo
echo "==> done: the binary is $RBUILD"
