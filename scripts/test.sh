#!/usr/bin/env bash
# Run otpd's whole test suite on a fresh machine: unit, property, end-to-end, CLI and
# interoperability tests. Servers the tests need they start themselves on loopback
# ports of their own; what they need installed is installed here:
# - Node.js and npm (Debian's packages) when absent, for the independent SMPP peer;
# - the npm `smpp` package, pinned by tests/interop/package-lock.json;
# - redis-server and redis-cli (Debian's packages) when absent: the Redis store,
#   limiter and queue tests start their own servers and clusters on free ports;
# - chromium (Debian's package) when absent: the load tool's HTML report is opened
#   headless to check that it renders;
# - h2load (Debian's nghttp2-client) when absent: an independent HTTP/2 client
#   drives otpd's h2c with many streams;
# - nghttpd (Debian's nghttp2-server) when absent: an independent HTTP/2 server
#   that the webhooks' own HTTP/2 client posts to;
# - the PyPI `standardwebhooks` package, pinned by tests/interop/requirements.txt,
#   into tests/interop/python: an independent check of the webhooks' signatures
#   (python3 and pip, Debian's packages, when absent);
# - systemd-analyze (Debian's systemd) when absent: the systemd unit is verified and
#   its hardening rated;
# - prometheus and promtool (Debian's prometheus) when absent: the alert rules are
#   checked and unit-tested, and a real Prometheus (started by the test on a free
#   port; the package's own service is not started) sees an alert fire.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "installing redis-server and redis-tools (Debian packages) for the Redis tests" >&2
  apt_install redis-server redis-tools
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js and npm (Debian packages) for the SMPP interoperability test" >&2
  apt_install nodejs npm
fi
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package) for the load report's rendering test" >&2
  apt_install chromium
fi

if ! command -v h2load >/dev/null; then
  echo "installing nghttp2-client (Debian package) for the HTTP/2 load test" >&2
  apt_install nghttp2-client
fi

if ! command -v nghttpd >/dev/null; then
  echo "installing nghttp2-server (Debian package): the webhooks' HTTP/2 client is tested against nghttpd" >&2
  apt_install nghttp2-server
fi

if ! command -v systemd-analyze >/dev/null; then
  echo "installing systemd (Debian package) to verify the systemd unit" >&2
  apt_install systemd
fi

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "installing prometheus (Debian package) for the alert rules' tests" >&2
  # Keep the package from starting its own server on :9090.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt_install --no-install-recommends prometheus
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "installing python3 and pip (Debian packages) for the webhook signature test" >&2
  apt_install python3 python3-pip
fi
if ! PYTHONPATH=tests/interop/python python3 -c "import standardwebhooks" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target tests/interop/python -r tests/interop/requirements.txt
fi

cargo test --workspace --locked "$@"
