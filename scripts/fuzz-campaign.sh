#!/usr/bin/env bash
# Build every cargo-fuzz target and run each for RUNS executions on its seed corpus, then print
# a table: target, executions, exec/s, crashes. See fuzz/README.md.
#
#   scripts/fuzz-campaign.sh [RUNS]            # default 10,000,000 executions per target
#   TARGETS="translate snappy_v2" scripts/fuzz-campaign.sh 1000000
#   MAX_TIME=1800 scripts/fuzz-campaign.sh     # also stop each target after 30 minutes
#   nice -n 19 scripts/fuzz-campaign.sh        # on a shared machine
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Works on stable Rust: cargo-fuzz's
# nightly flags are allowed with RUSTC_BOOTSTRAP=1, which this script sets.
#
# Every target runs with an allocation limit, so that a request asking for far more memory than
# it brought (the amplification of issue 11) stops the run as a finding (oom-*), not the machine.
# Findings land in fuzz/artifacts/<target>/; pin each in testdata/fuzz-regressions/<target>/ so
# that `cargo test --test fuzz_regressions` runs it, and fix what it shows.
set -euo pipefail

RUNS="${1:-${RUNS:-10000000}}"
MAX_TIME="${MAX_TIME:-0}"
# Largest input libFuzzer generates (0: the largest seed). Smaller inputs run many times faster,
# and every amplification the caps guard against fits in a few KiB.
MAX_LEN="${MAX_LEN:-0}"
TARGETS="${TARGETS:-snappy_v1 snappy_v2 translate config_yaml rule_file relabel_config route_selector exposition web_config snapshot queue_segment}"
SANITIZER="${SANITIZER:-address}"

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
export RUSTC_BOOTSTRAP=1
cd "$fuzz"

echo "building fuzz targets (sanitizer: $SANITIZER)..." >&2
cargo fuzz build --sanitizer "$SANITIZER" >&2

# Seeds per target: directories whose files the run reads first (new finds go to the first,
# fuzz/corpus/<target>, which is kept between campaigns).
seeds_for() {
    case "$1" in
        snappy_v1 | snappy_v2) echo "$root/testdata/payloads" ;;
        translate) echo "$fuzz/corpus/translate-seeds" ;;
        config_yaml) echo "$root/testdata/config/valid" ;;
        rule_file) echo "$root/rules" ;;
        relabel_config) echo "$fuzz/seeds/relabel_config" ;;
        route_selector) echo "$fuzz/seeds/route_selector" ;;
        web_config) echo "$fuzz/seeds/web_config" ;;
        snapshot) echo "$fuzz/seeds/snapshot" ;;
        queue_segment) echo "$fuzz/seeds/queue_segment" ;;
        exposition) echo "$root/testdata/ci" ;;
        *) echo "" ;;
    esac
}

# translate reads a mode byte first (bit 0: input version v1/v2, bit 1: tight or default
# output limit): the payload fixtures in every mode that fits their version.
mkdir -p corpus/translate-seeds
for f in "$root"/testdata/payloads/*.bin; do
    case "$f" in
        *.v2.bin) modes="01 03" ;;
        *) modes="00 02" ;;
    esac
    for m in $modes; do
        { printf "\\x$m"; cat "$f"; } >"corpus/translate-seeds/$m-$(basename "$f")"
    done
done

# Allocation limits (MB): one malloc, and the whole process.
limits_for() {
    case "$1" in
        # A 4 KiB input may ask for a few MiB of output under the caps, never for hundreds.
        translate | snappy_v1 | snappy_v2) echo "-malloc_limit_mb=256 -rss_limit_mb=1024" ;;
        *) echo "-malloc_limit_mb=512 -rss_limit_mb=2048" ;;
    esac
}

results=()
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/campaign.log"
    before=$(find "artifacts/$t" -type f ! -name '*.log' | wc -l)
    echo "fuzzing $t for $RUNS runs (log: fuzz/$log)..." >&2
    # shellcheck disable=SC2046 # the limits are several words on purpose
    set +e
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "corpus/$t" $(seeds_for "$t") -- \
        -runs="$RUNS" -max_total_time="$MAX_TIME" -max_len="$MAX_LEN" -timeout=10 $(limits_for "$t") \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    after=$(find "artifacts/$t" -type f ! -name '*.log' | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$((after - before))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="exit $status"
    fi
    results+=("$t|${execs:-?}|${rate:-?}|$crashes")
done

printf '\n| %-15s | %12s | %8s | %-8s |\n' target executions exec/s crashes
printf '|%s|%s|%s|%s|\n' "-----------------" "--------------" "----------" "----------"
for r in "${results[@]}"; do
    IFS='|' read -r t e s c <<<"$r"
    printf '| %-15s | %12s | %8s | %-8s |\n' "$t" "$e" "$s" "$c"
done
