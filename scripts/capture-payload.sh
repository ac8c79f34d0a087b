#!/usr/bin/env bash
# Record one real remote-write 1.0 request body from Prometheus 2.42 into
# testdata/payloads/prometheus-capture.v1.bin (used by the benchmarks).
#
# Prometheus (from scripts/fetch-peers.sh) scrapes itself and a ~300-series test target every
# second and remote-writes to an in-test capture server with the default batch_send_deadline
# (5s) and max_samples_per_send 2000 (today's default; 2.42's was 500). The first body with
# >= 500 distinct series is saved exactly as sent (snappy block).
#
#   scripts/capture-payload.sh                 # writes testdata/payloads/prometheus-capture.v1.bin
#   CARDGUARD_CAPTURE_OUT=/tmp/x.bin scripts/capture-payload.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/fetch-peers.sh"
exec cargo test --test e2e_passthrough -- --ignored --exact capture_prometheus_payload --nocapture
