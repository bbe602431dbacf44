#!/usr/bin/env bash
# The project's test command (the README's second command): every Rust test, then the
# Kotlin and Python binding suites, sharing one target dir so nothing is built twice.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo test --workspace --all-targets
bash bindings/ci.sh
