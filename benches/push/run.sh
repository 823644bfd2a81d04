#!/usr/bin/env bash
# Pushes per second through each of otpd's push clients, and through @parse/node-apn,
# against one push mock (`otpd simulate push`, TLS) on loopback, in the same run.
# ROUNDS rounds (default 5), each client in turn; prints every run and the medians.
#
#   benches/push/run.sh [COUNT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-50000}
rounds=${2:-5}
fixtures=adapters/tests/fixtures
cargo build --release -q -p otpd -p otpd-benches --bin otpd --bin push-load
(cd benches/push && npm install --silent --no-audit --no-fund >/dev/null)

tmp=$(mktemp -d)
trap 'kill $mock 2>/dev/null || true; rm -rf "$tmp"' EXIT
target/release/otpd simulate push --listen 127.0.0.1:0 --seconds 1800 \
  --apns-key "ABC123DEFG:TEAM123456:$fixtures/apns-test-key.pub" \
  --fcm-account "otpd@clave-test.iam.gserviceaccount.com:$fixtures/fcm-test-account.pub" \
  --hms-client 104523:hms-secret \
  --ca-out "$tmp/ca.pem" >"$tmp/url" 2>"$tmp/mock.log" &
mock=$!
for _ in $(seq 50); do [ -s "$tmp/url" ] && break; sleep 0.1; done
url=$(sed 's/^push mock listening on //' "$tmp/url")

: >"$tmp/runs"
for round in $(seq "$rounds"); do
  for p in apns fcm hms; do
    target/release/push-load "$url" "$tmp/ca.pem" "$p" "$count" 1 500 | tee -a "$tmp/runs"
  done
  target/release/push-load "$url" "$tmp/ca.pem" apns "$count" 2 1000 | tee -a "$tmp/runs"
  (cd benches/push && node apn-bench.js "$url" "$tmp/ca.pem" "$count" 500) | tee -a "$tmp/runs"
done

python3 - "$tmp/runs" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in runs:
    key = f"{r['client']:16} {r['provider']:4} connections={r['connections']}"
    groups.setdefault(key, []).append(r['rate'])
print("\nmedian pushes/s over", len(next(iter(groups.values()))), "rounds (min-max):")
for key, rates in groups.items():
    print(f"  {key}  {statistics.median(rates):9.0f}  ({min(rates):.0f}-{max(rates):.0f})")
PY
