#!/usr/bin/env bash
# Run otpd's whole test suite on a fresh machine: unit, property, end-to-end and CLI
# tests. Everything the tests need (a Rust toolchain aside) they start themselves on
# loopback ports of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
