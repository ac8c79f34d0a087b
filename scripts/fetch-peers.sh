#!/usr/bin/env bash
# Fetch the real peers the end-to-end tests and the load harness drive: Prometheus 2.42 (with
# promtool) and VictoriaMetrics 1.79 (single-node, vmagent), from Debian's packages. Nothing is
# installed system-wide: `apt-get download` fetches the .deb files and `dpkg -x` unpacks them into a
# cache directory. Safe to run again; it does nothing when the binaries are already there.
#
#   scripts/fetch-peers.sh            # into ./.peers (or $CARDGUARD_PEERS_DIR)
#
# The tests find the binaries under $CARDGUARD_PEERS_DIR/bin (default ./.peers/bin).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CARDGUARD_PEERS_DIR:-$root/.peers}
bin=$dir/bin
want=(prometheus promtool victoria-metrics vmagent)

have_all() {
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

if have_all; then
  echo "peers: already in $bin"
  exit 0
fi

mkdir -p "$dir/debs" "$dir/root" "$bin"
cd "$dir/debs"

download() {
  apt-get download prometheus victoria-metrics
}
if ! download 2>/dev/null; then
  echo "peers: apt-get download found nothing; running apt-get update first" >&2
  apt-get update -qq
  download
fi

for deb in prometheus_*.deb victoria-metrics_*.deb; do
  dpkg -x "$deb" "$dir/root"
done

link() { # link NAME CANDIDATE...
  local name=$1; shift
  for c in "$@"; do
    if [ -x "$dir/root/$c" ]; then ln -sf "$dir/root/$c" "$bin/$name"; return 0; fi
  done
  echo "peers: $name not found in the packages (looked for: $*)" >&2
  return 1
}
link prometheus usr/bin/prometheus
link promtool usr/bin/promtool
link victoria-metrics usr/bin/victoria-metrics usr/bin/victoria-metrics-prod
link vmagent usr/bin/vmagent usr/bin/vmagent-prod

have_all
version() { # Prometheus tools take --version, VictoriaMetrics ones -version.
  case $1 in
    prometheus|promtool) "$bin/$1" --version 2>&1 | head -n1 ;;
    # Debian's VictoriaMetrics build prints an empty version; the package knows it.
    *) echo "victoria-metrics $(dpkg-deb -f "$dir"/debs/victoria-metrics_*.deb Version)" ;;
  esac
}
for b in "${want[@]}"; do
  printf 'peers: %-17s %s\n' "$b" "$(version "$b")"
done
