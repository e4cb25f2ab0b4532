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
echo "==> the builder images (cargo xtask builder-image)"
# Built once here so the test that runs them in a real dockerd need not build them itself.
export RBUILD_BUILDER_IMAGE_DIR="$PWD/${CARGO_TARGET_DIR:-target}/builder-image"
cargo xtask builder-image "$RBUILD_BUILDER_IMAGE_DIR"
echo "==> cargo test"
mkdir -p "${CARGO_TARGET_DIR:-target}"
cargo test --workspace --no-fail-fast 2>&1 | tee "${CARGO_TARGET_DIR:-target}/test.log"
