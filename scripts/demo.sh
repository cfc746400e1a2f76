#!/usr/bin/env bash
# The main job: build portcullis and run the self-contained demo in network namespaces.
# Works as root on a fresh Debian 12 machine with the Rust toolchain; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 procps pkg-config libssl-dev
cargo build --release --locked --workspace
exec ./target/release/portcullisd demo "$@"
