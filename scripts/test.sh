#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that drive real packets through
# throwaway network namespaces with real nftables and real peer tools (knock, nmap).
# Works as root on a fresh Debian 12 machine with the Rust toolchain; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 procps nftables iptables ipset knockd nmap fwknop-client fwknop-server openssh-server openssh-client postgresql pkg-config libssl-dev
# Integration tests run the client binary too: build every binary first.
cargo build --locked --workspace
cargo test --locked --workspace
