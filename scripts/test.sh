#!/usr/bin/env bash
# The README's second command, and what CI runs: formatting, lints and the whole test suite,
# end-to-end tests included (they start their own registries and sandboxes and stop them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages "${TEST_PACKAGES[@]}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
mkdir -p "${CARGO_TARGET_DIR:-target}"
cargo test --workspace --no-fail-fast 2>&1 | tee "${CARGO_TARGET_DIR:-target}/test.log"
