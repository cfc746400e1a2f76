#!/usr/bin/env bash
# Grants API benchmarks (not part of the tests): allow → reachable latency in a throwaway
# lab with real nftables, 1,000 concurrent allow/revoke, list latency with 100,000 records.
# Figures are recorded in docs/api.md.   bash scripts/api-bench.sh [list|lab]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 nftables pkg-config libssl-dev
cargo build --locked --release -q -p portcullis-daemon --bin portcullisd --example api_bench
exec target/release/examples/api_bench "$@"
