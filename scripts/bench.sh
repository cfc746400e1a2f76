#!/usr/bin/env bash
# Benchmark portcullisd side by side with knockd and fwknopd, in throwaway network
# namespaces (never the root namespace's firewall). Installs what it needs, builds in
# release mode, runs the suite, prints the markdown report and saves it to
# bench/results-<date>.md.
#
#   bash scripts/bench.sh            # full suite, about 7 minutes on 2 cores
#   bash scripts/bench.sh --quick    # fewer trials, shorter floods, about 3 minutes
#   bash scripts/bench.sh latency    # one scenario: latency|flood|spa-flood|grants|spa|memory
#   bash scripts/bench.sh fleet      # fleet mode: 3 gateways on a throwaway PostgreSQL (not in the full suite)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 procps util-linux ipset knockd fwknop-server fwknop-client nftables iptables postgresql pkg-config libssl-dev
cargo build --release --locked --workspace

cmd=all
args=()
for a in "$@"; do
  case "$a" in
    all|latency|flood|spa-flood|grants|spa|memory|watch|fleet) cmd="$a" ;;
    *) args+=("$a") ;;
  esac
done
mkdir -p bench
out="bench/results-$(date -u +%Y-%m-%d).md"
# Never overwrite an earlier run of the same day.
[ -e "$out" ] && out="bench/results-$(date -u +%Y-%m-%d-%H%M).md"
./target/release/portcullis-bench "$cmd" ${args[@]+"${args[@]}"} --out "$out"
echo "saved: $out" >&2
