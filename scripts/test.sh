#!/usr/bin/env bash
# Run otpd's whole test suite on a fresh machine: unit, property, end-to-end, CLI and
# interoperability tests. Servers the tests need they start themselves on loopback
# ports of their own; what they need installed is installed here:
# - Node.js and npm (Debian's packages) when absent, for the independent SMPP peer;
# - the npm `smpp` package, pinned by tests/interop/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js and npm (Debian packages) for the SMPP interoperability test" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

cargo test --workspace --locked "$@"
