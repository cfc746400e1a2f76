#!/usr/bin/env bash
# Build the Debian package into target/debian/ (cargo-deb; metadata in
# crates/daemon/Cargo.toml) and run lintian on it. Installs what it needs.
#   bash scripts/package.sh            # build, lint (lintian warnings and errors fail)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages dpkg-dev lintian python3 gzip pkg-config libssl-dev
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

cargo build --release --locked -p portcullis-daemon -p portcullis-cli -p portcullis-docgen

# Generated assets (paths as in [package.metadata.deb]): man pages, completions and the
# licences of the crates linked into the two programs.
docs=target/pkg-docs
rm -rf "$docs"
date=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
./target/release/portcullis-docgen --out "$docs" --date "$date" >/dev/null
cargo metadata --locked --format-version 1 --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
  python3 -c '
import json, sys
m = json.load(sys.stdin)
pkgs = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
todo = [i for i, p in pkgs.items() if p["name"] in ("portcullis-daemon", "portcullis-cli")]
seen = set()
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        # Normal dependencies only: what is linked (build scripts and macros are not).
        if any(k["kind"] is None for k in d["dep_kinds"]):
            todo.append(d["pkg"])
print("Rust crates linked into portcullisd and portcullis (crate version: licence)\n")
for p in sorted((pkgs[i] for i in seen), key=lambda p: (p["name"], p["version"])):
    if not p["name"].startswith("portcullis"):
        print("%s %s: %s" % (p["name"], p["version"], p["license"] or "see the crate"))
' > "$docs/third-party-crates.txt"

rm -f target/debian/portcullis_*.deb
maint=()
# A distribution build sets DEBFULLNAME and DEBEMAIL (there is no public address yet).
if [ -n "${DEBEMAIL:-}" ]; then maint=(--maintainer "${DEBFULLNAME:-portcullis} <$DEBEMAIL>"); fi
cargo deb -p portcullis-daemon --no-build --locked --strip "${maint[@]}" --output target/debian/
deb=$(ls target/debian/portcullis_*.deb)
echo "built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}'

# Tags we accept are overridden, with the reason, in contrib/debian/lintian-overrides.
lintian --info --display-info --fail-on error,warning "$deb"
echo "lintian: no errors or warnings"
