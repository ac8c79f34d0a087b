#!/usr/bin/env bash
# Fetch the real peers the end-to-end tests and the load harness drive: Prometheus 2.42 (with
# promtool) and VictoriaMetrics 1.79 (single-node, vmagent), from Debian's packages, and the
# headless Chromium the status page's browser test drives. Nothing is installed system-wide:
# `apt-get download` fetches the .deb files and `dpkg -x` unpacks them into a cache directory.
# Safe to run again; it does nothing when the binaries are already there.
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

# Headless Chromium for tests/e2e_status_page.rs: the machine's own (/usr/bin/chromium) when it
# has one; otherwise Debian's `chromium` package and those of its libraries the machine lacks,
# unpacked into $dir/chromium and started through a wrapper that points LD_LIBRARY_PATH there.
fetch_chromium() {
  if [ -x "$bin/chromium" ]; then
    echo "peers: chromium         already in $bin"
    return 0
  fi
  mkdir -p "$bin"
  if [ -x /usr/bin/chromium ]; then
    ln -sf /usr/bin/chromium "$bin/chromium"
    echo "peers: chromium         $(/usr/bin/chromium --version 2>/dev/null | head -n1) (the system's)"
    return 0
  fi
  local croot=$dir/chromium debs=$dir/debs/chromium
  mkdir -p "$croot" "$debs"
  # Debian's dependencies, first alternative of each, recursively, minus what is installed.
  local -A seen=()
  local queue=(chromium) missing=() p d
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    case $p in '<'*) continue ;; esac  # a virtual package: whatever provides it is installed
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] && continue
    missing+=("$p")
    for d in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$p" 2>/dev/null |
      awk '/^ *\|?(Pre)?Depends:/ { if (!alt) print $2; alt = ($1 ~ /^\|/) }'); do
      queue+=("${d%%:*}")
    done
  done
  echo "peers: chromium needs ${#missing[@]} packages: ${missing[*]}"
  local fetch=()
  for p in "${missing[@]}"; do
    compgen -G "$debs/${p}_*.deb" >/dev/null || fetch+=("$p")
  done
  if [ ${#fetch[@]} -gt 0 ]; then
    (cd "$debs" && apt-get download "${fetch[@]}")
  fi
  for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$croot"
  done
  local exe=$croot/usr/lib/chromium/chromium
  [ -x "$exe" ] || { echo "peers: chromium not found in the package (looked for $exe)" >&2; return 1; }
  local arch libs
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  # libpulse0 keeps its private library in a subdirectory.
  libs=$croot/usr/lib/$arch:$croot/lib/$arch:$croot/usr/lib/$arch/pulseaudio:$croot/usr/lib/chromium
  cat >"$bin/chromium" <<WRAPPER
#!/bin/sh
# Chromium unpacked by scripts/fetch-peers.sh, with the libraries the machine lacks.
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CHROME_WRAPPER="\$0"
exec "$exe" "\$@"
WRAPPER
  chmod +x "$bin/chromium"
  local unresolved
  unresolved=$(LD_LIBRARY_PATH=$libs ldd "$exe" | grep 'not found' || true)
  if [ -n "$unresolved" ]; then
    echo "peers: chromium still lacks libraries:" >&2
    echo "$unresolved" >&2
    rm -f "$bin/chromium"
    return 1
  fi
  echo "peers: chromium         $("$bin/chromium" --version 2>/dev/null | head -n1)"
}

# Redis for tests/e2e_shared.rs and the load harness's shared mode: Debian's `redis-server` and
# `redis-tools` (the server binary is redis-tools' redis-check-rdb under another name) with the
# two libraries a base system lacks (jemalloc, lzf), unpacked into $dir/redis and started
# through a wrapper that points LD_LIBRARY_PATH there.
fetch_redis() {
  if [ -x "$bin/redis-server" ]; then
    echo "peers: redis-server     already in $bin"
    return 0
  fi
  mkdir -p "$bin"
  local rroot=$dir/redis debs=$dir/debs/redis p
  mkdir -p "$rroot" "$debs"
  local fetch=()
  for p in redis-server redis-tools libjemalloc2 liblzf1; do
    compgen -G "$debs/${p}_*.deb" >/dev/null || fetch+=("$p")
  done
  if [ ${#fetch[@]} -gt 0 ]; then
    (cd "$debs" && apt-get download "${fetch[@]}")
  fi
  for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$rroot"
  done
  local exe=$rroot/usr/bin/redis-check-rdb
  [ -x "$exe" ] || { echo "peers: redis-server not found in the packages (looked for $exe)" >&2; return 1; }
  local arch libs
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  libs=$rroot/usr/lib/$arch:$rroot/lib/$arch
  # Redis picks its role from argv[0]: exec -a keeps it "redis-server".
  cat >"$bin/redis-server" <<WRAPPER
#!/bin/bash
# Redis unpacked by scripts/fetch-peers.sh, with the libraries the machine lacks.
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec -a redis-server "$exe" "\$@"
WRAPPER
  cat >"$bin/redis-cli" <<WRAPPER
#!/bin/sh
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$rroot/usr/bin/redis-cli" "\$@"
WRAPPER
  chmod +x "$bin/redis-server" "$bin/redis-cli"
  local unresolved
  unresolved=$(LD_LIBRARY_PATH=$libs ldd "$exe" | grep 'not found' || true)
  if [ -n "$unresolved" ]; then
    echo "peers: redis-server still lacks libraries:" >&2
    echo "$unresolved" >&2
    rm -f "$bin/redis-server" "$bin/redis-cli"
    return 1
  fi
  echo "peers: redis-server     $("$bin/redis-server" --version 2>/dev/null | head -n1)"
}

if have_all; then
  echo "peers: already in $bin"
  fetch_redis
  fetch_chromium
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
fetch_redis
fetch_chromium
