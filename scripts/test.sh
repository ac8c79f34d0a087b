#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this): fetch the real peers
# (Prometheus, VictoriaMetrics) into ./.peers, check formatting and lints, then run every
# test: unit, property, end-to-end against the real peers, and each bench once in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-peers.sh
"${CARDGUARD_PEERS_DIR:-.peers}/bin/promtool" check rules rules/cardguard-alerts.yml
"${CARDGUARD_PEERS_DIR:-.peers}/bin/promtool" check rules rules/example.yml
"${CARDGUARD_PEERS_DIR:-.peers}/bin/promtool" test rules rules/cardguard-alerts.test.yml
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Each bench once in test mode first (so they never rot), then every test: unit, property and
# end-to-end, whose summary lines close the output.
cargo test --benches --locked
# Prometheus's own PromQL scripts through the rule engine, with its per-file counts and the
# `promql conformance: N passed, M failed, K unsupported` line shown (fails if M > 0), then
# cardguard's own cases in the same language (`promql own cases: ...`).
cargo test --locked --test promql_conformance -- --nocapture
cargo test --lib --bins --tests --locked
