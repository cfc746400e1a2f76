#!/usr/bin/env bash
# Boot a real systemd (Debian 12 in systemd-nspawn) with the built .deb installed, and
# check the units from outside, over a private network:
#   - installed, nothing changes; `systemctl enable --now` of both units: both active, the
#     protected port is filtered from a second namespace; a knock opens it; the API
#     socket shows the grant;
#   - the daemon runs split (docs/privsep.md): the main process is root with only
#     CAP_NET_ADMIN, its one child is user `portcullis` (created by the package) with every
#     capability set empty, no_new_privs, seccomp and Landlock;
#   - kill -9 of either part: the port stays filtered for strangers meanwhile, systemd
#     restarts the pair, split again, the grant is intact;
#   - upgrade (dpkg -i again): edited config kept, daemon restarted, grant intact;
#   - daemon disabled + reboot: the gate alone keeps the port filtered, also across
#     systemctl restart/reload nftables (which flush the ruleset);
#   - dpkg -r: the table is removed; dpkg --purge keeps the `portcullis` user and the
#     grant records.
#   - systemd-analyze security: at most 2.5 for both units (offline, and for the running
#     daemon inside the container; both figures are printed).
# The container only ever gets a network namespace this script creates (never the host's).
# Also: Type=notify reaches active; a wedged capture loop is killed by the watchdog and
# restarted; SIGHUP (systemctl reload) with a changed sequence takes effect, a bad config
# is refused at priority err and the old one keeps running. (While a split daemon says
# at start that its reload needs a restart, the reload checks are skipped, loudly.)
# Needs root.
# Builds the package (scripts/package.sh) if target/debian has none.
# The Debian 12 root filesystem is made once with debootstrap (from the mirror apt uses)
# and cached in target/systemd-test/rootfs (or ROOTFS_CACHE=dir, e.g. another worktree's,
# so a machine keeps one); each run works on a fresh copy.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages debootstrap systemd-container iproute2 nmap util-linux

work=target/systemd-test
cache=${ROOTFS_CACHE:-$work/rootfs}
tag=pcst$$
srv=$tag-srv
cli=$tag-cli
tree=$work/run-$$
nspawn_pid=
SERVER=10.231.0.1
CLIENT=10.231.0.2
STRANGER=10.231.0.3 # a second address of the client namespace, never granted
PORT=2222

log() { echo "systemd-test: $*"; }
fail() { echo "systemd-test: FAIL: $*" >&2; exit 1; }

# --- two namespaces joined by a veth pair; the container gets the server one.
# Made afresh for every boot: a reboot empties the kernel's tables, so must the test.
net_up() {
  ip netns add "$srv"
  ip netns add "$cli"
  ip -n "$srv" link add eth0 type veth peer name eth0 netns "$cli"
  ip -n "$srv" addr add $SERVER/24 dev eth0
  ip -n "$cli" addr add $CLIENT/24 dev eth0
  ip -n "$cli" addr add $STRANGER/24 dev eth0
  for ns in "$srv" "$cli"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
}
net_down() {
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || true # nspawn halts the container's systemd
    for _ in $(seq 1 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
  fi
  net_down
  rm -rf "$tree"
  if [ $rc -ne 0 ] && [ -f "$work/console-$$.log" ]; then
    echo "--- container console (last 60 lines) ---" >&2
    tail -n 60 "$work/console-$$.log" >&2
  fi
  rm -f "$work/console-$$.log"
  exit $rc
}
trap cleanup EXIT

# --- the package
deb=$(ls target/debian/portcullis_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  bash scripts/package.sh
  deb=$(ls target/debian/portcullis_*.deb | head -1)
fi
log "package $deb"

# --- the units' sandbox: systemd-analyze's exposure score at most 2.5 for each
for unit in contrib/systemd/*.service; do
  score=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  systemd-analyze security --offline=yes --threshold=25 "$unit" >/dev/null 2>&1 ||
    fail "$unit: systemd-analyze security exposure ${score:-?} is above 2.5"
  log "ok: $(basename "$unit"): exposure $score"
done

# --- the cached Debian 12 tree
if [ ! -d "$cache" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -E '^(URIs:|deb )' | grep -v security | grep -m1 -oE 'https?://[^ ]+/debian/?( |$)' | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrap bookworm from $mirror into $cache (once)"
  rm -rf "$cache.tmp"
  mkdir -p "$work"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,nftables,iproute2,procps \
    bookworm "$cache.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 || fail "debootstrap, see $work/debootstrap.log"
  mv "$cache.tmp" "$cache"
fi
rm -rf "$tree"
mkdir -p "$work"
cp -a "$cache" "$tree"

# --- install the package and a config with one door into the copy (not booted yet)
cp "$deb" "$tree/root/portcullis.deb" # (nspawn mounts a fresh /tmp)
offline() { systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$tree" "$@"; }
offline dpkg -i /root/portcullis.deb >/dev/null
# The units as installed; the rootfs has no man-db, so the man: links cannot be followed
# here: check the pages exist instead.
problems=$(offline systemd-analyze verify portcullisd.service portcullis-gate.service 2>&1 |
  grep -v "Command 'man \|Attempted to remove disk file system" || true)
[ -z "$problems" ] || fail "systemd-analyze verify: $problems"
for page in man8/portcullisd.8 man8/portcullisd-run.8 man8/portcullisd-gate.8 man1/portcullis.1; do
  [ -f "$tree/usr/share/man/$page.gz" ] || fail "man page $page missing"
done
log "ok: installed; systemd-analyze verify has nothing to say; man pages present"
user=$(offline getent passwd portcullis | tr -d "\r") && [ -n "$user" ] || fail "the package did not create the portcullis user"
[ "$(cut -d: -f3 <<<"$user")" -lt 1000 ] && [ "$(cut -d: -f3 <<<"$user")" -gt 0 ] || fail "portcullis is not a system user: $user"
case "$(cut -d: -f7 <<<"$user")" in */nologin | */false) ;; *) fail "portcullis can log in: $user" ;; esac
log "ok: system user created: $user"
offline portcullisd check --config /etc/portcullis/portcullis.toml >/dev/null 2>&1 &&
  fail "the shipped config must protect nothing (check should refuse it)"
sed -i '/^# \[\[door\]\]/,/^# open_for/{s/^# //; s/^sequence = .*/sequence = [31337, "47123:udp", 12011]/; s/^open = .*/open = ["tcp\/'$PORT'"]/; s/^open_for = .*/open_for = 600/}' \
  "$tree/etc/portcullis/portcullis.toml"
# The API too: its socket lives in /run/portcullis (RuntimeDirectory=) under ProtectSystem=strict.
sed -i 's/^# \[api\]$/[api]/; s/^# socket = /socket = /; s/^# tokens_file = /tokens_file = /' "$tree/etc/portcullis/portcullis.toml"
(umask 077 && echo "admin $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$tree/etc/portcullis/api.tokens")
offline portcullisd check --config /etc/portcullis/portcullis.toml >/dev/null
# No console login, no network management in the container: the host sets the addresses.
offline systemctl mask console-getty.service systemd-networkd.service systemd-resolved.service >/dev/null 2>&1 || true
echo "pcst" >"$tree/etc/hostname"

# CAP_NET_ADMIN: nspawn only grants it by itself with --private-network; here it acts
# on the namespace we made for the container and nothing else. The Landlock calls: the
# seccomp filter nspawn 252 puts on a container refuses them (a host has no such filter),
# and the daemon's unprivileged part uses them.
boot() {
  systemd-nspawn --quiet --boot --register=no --keep-unit --console=read-only \
    --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
    --network-namespace-path="/run/netns/$srv" --capability=CAP_NET_ADMIN -D "$tree" >>"$work/console-$$.log" 2>&1 &
  nspawn_pid=$!
}

# PID 1 of the container: the child of systemd-nspawn.
init_pid() { pgrep -P "$nspawn_pid" -x systemd | head -1; }
# Every namespace of the container, the network one included: commands run inside
# (dpkg maintainer scripts, say) must never reach the host's firewall.
inside() { nsenter --target "$(init_pid)" --mount --uts --ipc --pid --net --cgroup -- "$@"; }

wait_active() { # unit, seconds
  local state=
  for _ in $(seq 1 $(($2 * 5))); do
    kill -0 "$nspawn_pid" 2>/dev/null || fail "the container exited while waiting for $1"
    if [ -n "$(init_pid)" ]; then
      state=$(inside systemctl is-active "$1" 2>/dev/null || true)
      [ "$state" = active ] && return 0
    fi
    sleep 0.2
  done
  inside systemctl status --no-pager "$1" >&2 || true
  inside journalctl --no-pager -n 40 -u "$1" >&2 || true
  fail "$1 is $state, not active"
}

probe() { # [source address] -> open | closed | filtered
  local src=()
  [ -z "${1:-}" ] || src=(-S "$1" -e eth0)
  ip netns exec "$cli" nmap -Pn -n -sS "${src[@]}" -p $PORT --max-retries 1 --max-rtt-timeout 400ms -oG - $SERVER |
    sed -n "s|.*Ports: $PORT/\([a-z]*\)/.*|\1|p"
}

stranger_filtered() { # what
  local got
  got=$(probe $STRANGER)
  [ "$got" = filtered ] || fail "$1: port $PORT is '$got' for $STRANGER (never granted), expected 'filtered'"
  log "ok: $1 (port $PORT filtered for $STRANGER)"
}

expect_port() { # state, what
  local got
  got=$(probe)
  [ "$got" = "$1" ] || fail "$2: port $PORT is '$got', expected '$1'"
  log "ok: $2 (port $PORT $got)"
}

# A field of /proc/PID/status inside the container (all its values, one space apart).
status_field() { inside awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status"; }

# The daemon runs split: the main process (root) keeps CAP_NET_ADMIN only; its single
# child, the unprivileged part, is `portcullis` with no capabilities at all.
check_split() { # what
  local main kids uid want f v line
  main=$(inside systemctl show -P MainPID portcullisd.service)
  [ "$main" != 0 ] || fail "$1: portcullisd has no main process"
  kids=$(inside pgrep -P "$main" | tr '\n' ' ' | sed 's/ $//' || true)
  [ -n "$kids" ] && [ "$kids" = "${kids%% *}" ] ||
    fail "$1: the main process $main has children '$kids', expected exactly one (the unprivileged part)"
  want=$(inside getent passwd portcullis | cut -d: -f3)
  [ -n "$want" ] && [ "$want" != 0 ] || fail "$1: no portcullis user"
  [ "$(status_field "$main" Uid)" = "0 0 0 0" ] || fail "$1: privileged part uid $(status_field "$main" Uid)"
  uid=$(status_field "$kids" Uid)
  [ "$uid" = "$want $want $want $want" ] || fail "$1: unprivileged part uid '$uid', expected portcullis ($want)"
  [ "$(status_field "$kids" Gid)" != "0 0 0 0" ] || fail "$1: unprivileged part kept gid 0"
  [ "$(status_field "$kids" Groups)" = "" ] || fail "$1: unprivileged part has groups $(status_field "$kids" Groups)"
  for f in CapInh CapPrm CapEff CapBnd CapAmb; do
    v=$(status_field "$kids" $f)
    [ "$v" = 0000000000000000 ] || fail "$1: unprivileged part $f is $v, expected empty"
  done
  # CAP_NET_ADMIN is bit 12; the test's config uses nftables and has no door commands.
  for f in CapPrm CapEff CapBnd; do
    v=$(status_field "$main" $f)
    [ "$v" = 0000000000001000 ] || fail "$1: privileged part $f is $v, expected CAP_NET_ADMIN only (0000000000001000)"
  done
  for f in CapInh CapAmb; do
    v=$(status_field "$main" $f)
    [ "$v" = 0000000000000000 ] || fail "$1: privileged part $f is $v, expected empty"
  done
  for pid in "$main" "$kids"; do
    [ "$(status_field "$pid" NoNewPrivs)" = 1 ] || fail "$1: pid $pid has no no_new_privs"
    [ "$(status_field "$pid" Seccomp)" = 2 ] || fail "$1: pid $pid has no seccomp filter"
  done
  # The kernel's Landlock ABI, as the unprivileged part found it when it confined itself.
  line=$(inside journalctl --no-pager -o cat -u portcullisd.service | grep "unprivileged part (pid $kids)" | tail -1)
  grep -q "landlock (ABI [0-9]*)" <<<"$line" || fail "$1: the unprivileged part is not confined by Landlock: $line"
  log "ok: $1: split; privileged pid $main uid 0 CapEff=CAP_NET_ADMIN; unprivileged pid $kids uid $want (portcullis) CapEff 0, bounding 0, no_new_privs, seccomp, $(grep -o 'landlock (ABI [0-9]*)' <<<"$line")"
}

# Wait until systemd restarted the daemon: a main process other than $1, active, split.
wait_restart() { # old MainPID, what
  local now=
  for _ in $(seq 1 150); do
    now=$(inside systemctl show -P MainPID portcullisd.service)
    if [ "$now" != "$1" ] && [ "$now" != 0 ] && [ "$(inside systemctl is-active portcullisd.service)" = active ] &&
      [ -n "$(inside pgrep -P "$now" || true)" ]; then
      log "ok: $2: restarted (MainPID $1 -> $now)"
      return 0
    fi
    sleep 0.2
  done
  fail "$2: not restarted (MainPID $1 -> $now)"
}

stop_container() {
  kill -TERM "$nspawn_pid"
  for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$nspawn_pid" 2>/dev/null && fail "container did not halt"
  wait "$nspawn_pid" 2>/dev/null || true
  nspawn_pid=
}

# --- 1. boot with the package installed: nothing changes until the admin enables the units
net_up
expect_port closed "before boot, nothing listens and nothing filters"
boot
wait_active multi-user.target 60
expect_port closed "installed but not enabled: the firewall is unchanged"
if ! inside systemctl enable --now portcullis-gate.service portcullisd.service >/dev/null 2>&1; then
  inside systemctl status --no-pager portcullis-gate.service portcullisd.service >&2 || true
  inside journalctl --no-pager -n 60 -u portcullisd.service >&2 || true
  fail "systemctl enable --now portcullis-gate portcullisd failed"
fi
wait_active portcullis-gate.service 60
wait_active portcullisd.service 60
log "ok: systemctl enable --now: portcullis-gate and portcullisd active"
expect_port filtered "protected from a second namespace"

client=target/release/portcullis
ip netns exec "$cli" "$client" knock -d 50 $SERVER 31337 47123:udp 12011
sleep 0.5
expect_port closed "after the knock, the knocker gets through (RST: nothing listens)"
grants=$(inside portcullis grants list) || fail "portcullis grants list failed: $grants"
grep -q "$CLIENT" <<<"$grants" || fail "portcullis grants list (API socket) does not show the grant: $grants"
log "ok: portcullis grants list over /run/portcullis/api.sock shows the grant"

# --- 2. the split, and kill -9 of either part: the pair is restarted, ports stay protected
inside journalctl --no-pager -o cat -u portcullisd.service | grep -q "NOT SPLIT" &&
  fail "the daemon did not split: $(inside journalctl --no-pager -o cat -u portcullisd.service | grep 'NOT SPLIT')"
check_split "under systemd"
online=$(inside systemd-analyze security --no-pager portcullisd.service 2>/dev/null |
  sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
inside systemd-analyze security --threshold=25 portcullisd.service >/dev/null 2>&1 ||
  fail "systemd-analyze security of the running portcullisd.service: ${online:-?}, above 2.5"
log "ok: systemd-analyze security portcullisd.service (running, $(date -u +%F)): exposure $online"
stranger_filtered "an address that never knocked"
for part in unprivileged privileged; do
  pid=$(inside systemctl show -P MainPID portcullisd.service)
  victim=$pid
  [ $part = privileged ] || victim=$(inside pgrep -P "$pid")
  inside kill -9 "$victim"
  stranger_filtered "right after kill -9 of the $part part (pid $victim)"
  wait_restart "$pid" "kill -9 of the $part part"
  check_split "after kill -9 of the $part part"
  stranger_filtered "after the restart"
  expect_port closed "the knocker's grant survived kill -9 of the $part part and the restart"
done
new=$(inside systemctl show -P MainPID portcullisd.service)
log "portcullisd's journal:"
inside journalctl --no-pager -o cat -u portcullisd.service | sed 's/^/    /'

# --- 2b. SIGHUP: a changed sequence takes effect; a bad config is refused, logged at err
conf=$tree/etc/portcullis/portcullis.toml
journal() { inside journalctl --no-pager -o cat -u portcullisd.service "$@"; }
count() { journal | grep -c "$1" || true; }
wait_count() { # needle, more than
  for _ in $(seq 1 25); do
    [ "$(count "$1")" -gt "$2" ] && return 0
    sleep 0.2
  done
  return 1
}
seq_now=31338
! journal | grep -q "SIGHUP reload needs a restart in this mode" ||
  fail "the split daemon says it cannot reload on SIGHUP"
opens=$(count "OPEN SESAME")
sed -i 's/^sequence = \[31337, "47123:udp", 12011\]/sequence = [31338, 12012, "47124:udp"]/' "$conf"
grep -q '^sequence = \[31338' "$conf" || fail "could not edit the sequence"
reloads=$(count "reloaded:")
inside systemctl reload portcullisd.service
wait_count "reloaded:" "$reloads" || fail "no 'reloaded:' in the journal after systemctl reload"
[ "$(inside systemctl is-active portcullisd.service)" = active ] || fail "not active after reload"
ip netns exec "$cli" "$client" knock -d 50 $SERVER 31337 47123:udp 12011
sleep 1
[ "$(count "OPEN SESAME")" = "$opens" ] || fail "the old sequence still opens after the reload"
ip netns exec "$cli" "$client" knock -d 50 $SERVER 31338 12012 47124:udp
wait_count "OPEN SESAME" "$opens" || fail "the new sequence does not open after the reload"
expect_port closed "after SIGHUP with a new sequence: the new one opens, the grant is intact"
cp "$conf" "$work/good-$$.toml"
echo 'open_for = "soon"' >>"$conf"
refused=$(inside journalctl --no-pager -o cat -p err -u portcullisd.service | grep -c "reload refused" || true)
inside systemctl reload portcullisd.service
for _ in $(seq 1 25); do
  now=$(inside journalctl --no-pager -o cat -p err -u portcullisd.service | grep -c "reload refused" || true)
  [ "$now" -gt "$refused" ] && break
  sleep 0.2
done
[ "$now" -gt "$refused" ] || fail "a bad config on reload is not in journalctl -p err"
line=$(inside journalctl --no-pager -o cat -p err -u portcullisd.service | grep "reload refused" | tail -1)
grep -q "portcullis.toml:" <<<"$line" || fail "the refusal does not say file:line: $line"
[ "$(inside systemctl is-active portcullisd.service)" = active ] || fail "a bad config on reload stopped the daemon"
log "ok: a bad config on reload is refused at priority err: $line"
cp "$work/good-$$.toml" "$conf"
rm -f "$work/good-$$.toml"

! journal | grep -q "Watchdog timeout" || fail "the watchdog fired before the wedge test"

# --- 2c. a wedged capture loop: the watchdog kills it, systemd restarts it. The test
# hook needs both the environment variable and the file in the state directory.
mkdir -p "$tree/etc/systemd/system/portcullisd.service.d"
printf '[Service]\nEnvironment=PORTCULLIS_WATCHDOG_TEST=1\nWatchdogSec=3s\n' \
  >"$tree/etc/systemd/system/portcullisd.service.d/wedge-test.conf"
inside systemctl daemon-reload
inside systemctl restart portcullisd.service
wait_active portcullisd.service 30
pid=$(inside systemctl show -P MainPID portcullisd.service)
# Fed while healthy: the keep-alive comes from the unprivileged part (a child of the
# main process), so this needs NotifyAccess=all and the watchdog handed to that part.
sleep 8
[ "$(inside systemctl show -P MainPID portcullisd.service)" = "$pid" ] ||
  fail "the healthy daemon was restarted within 8 s of WatchdogSec=3s: the watchdog is not fed"
log "ok: a healthy split daemon feeds the watchdog (8 s at WatchdogSec=3s, MainPID $pid kept)"
inside touch /var/lib/portcullis/wedge-capture-loop
restarted=
for _ in $(seq 1 75); do
  now=$(inside systemctl show -P MainPID portcullisd.service)
  if [ "$now" != "$pid" ] && [ "$now" != 0 ] && [ "$(inside systemctl is-active portcullisd.service)" = active ]; then
    restarted=1
    break
  fi
  sleep 0.2
done
[ -n "$restarted" ] || fail "the wedged daemon (MainPID $pid) was not killed and restarted by the watchdog"
inside journalctl --no-pager -u portcullisd.service | grep -q "Watchdog timeout" ||
  fail "restarted, but not by the watchdog"
log "ok: wedged capture loop killed by the watchdog and restarted (MainPID $pid -> $now)"
rm "$tree/etc/systemd/system/portcullisd.service.d/wedge-test.conf"
inside systemctl daemon-reload
inside systemctl restart portcullisd.service
wait_active portcullisd.service 30
expect_port closed "the knocker's grant survived the watchdog restart"
new=$(inside systemctl show -P MainPID portcullisd.service)

# --- 3. upgrade (the same package again): config kept, daemon restarted, port protected
inside dpkg -i /root/portcullis.deb >/dev/null
grep -q "^sequence = \[$seq_now" "$tree/etc/portcullis/portcullis.toml" || fail "upgrade replaced the edited config"
wait_active portcullisd.service 30
up=$(inside systemctl show -P MainPID portcullisd.service)
[ "$up" != "$new" ] || fail "upgrade did not restart the running daemon"
log "ok: upgrade kept the config and restarted the daemon (MainPID $new -> $up)"
expect_port closed "the knocker's grant survived the upgrade"

# --- 3b. a door with knockd-style commands: they run as root in the privileged part, and
# the pending stop is written in the state directory the unprivileged part owns (root
# without CAP_DAC_OVERRIDE writes there through the directory's group).
cat >>"$conf" <<'EOF'

[[door]]
name = "cmd"
sequence = [31400, 31402, 31401]
start_command = ["/usr/bin/logger", "-t", "pcst-door", "start %IP%"]
stop_command = ["/usr/bin/logger", "-t", "pcst-door", "stop %IP%"]
cmd_timeout = 3
EOF
inside systemctl restart portcullisd.service
wait_active portcullisd.service 30
ip netns exec "$cli" "$client" knock -d 50 $SERVER 31400 31402 31401
ran() { inside journalctl --no-pager -o cat -t pcst-door | grep -c "^$1 $CLIENT$" || true; }
for _ in $(seq 1 25); do [ "$(ran start)" -ge 1 ] && break; sleep 0.2; done
[ "$(ran start)" -ge 1 ] || fail "the door's start command did not run: $(journal | tail -20)"
pending=$(inside stat -c '%U %a' /var/lib/portcullis/pending-stops.toml 2>/dev/null || true)
[ "$pending" = "root 600" ] || fail "pending-stops.toml is '$pending', expected root's, 0600: $(journal | grep -i pending | tail -3)"
for _ in $(seq 1 40); do [ "$(ran stop)" -ge 1 ] && break; sleep 0.2; done
[ "$(ran stop)" -ge 1 ] || fail "the door's stop command did not run after cmd_timeout"
! journal | grep -qi "pending.*\(denied\|failed\)" || fail "pending stop file errors: $(journal | grep -i pending | tail -3)"
log "ok: door commands run under the unit (start, pending stop recorded as root 0600, stop after 3 s)"

# --- 4. daemon disabled, container rebooted: the gate alone keeps the port closed
inside systemctl disable --now portcullisd.service >/dev/null 2>&1
stop_container
net_down
net_up
expect_port closed "host rebooted (fresh namespace), nothing filters yet"
boot
wait_active portcullis-gate.service 60
[ "$(inside systemctl is-active portcullisd.service || true)" != active ] || fail "portcullisd should be disabled"
expect_port filtered "after reboot with the daemon disabled, the gate keeps it filtered"

# Debian's nftables.service flushes the whole ruleset on start, restart and reload; the
# gate follows it (PartOf=, ReloadPropagatedFrom=) and installs the table again.
gates() { inside journalctl --no-pager -o cat -u portcullis-gate.service | grep -c "gate installed" || true; }
gate_ran_since() { # count before; the propagated job may finish after systemctl returns
  for _ in $(seq 1 25); do
    [ "$(gates)" -gt "$1" ] && return 0
    sleep 0.2
  done
  return 1
}
before=$(gates)
inside systemctl restart nftables.service
[ "$(inside systemctl is-active nftables.service)" = active ] || fail "nftables.service did not start"
gate_ran_since "$before" || fail "the gate did not follow the nftables restart"
expect_port filtered "after systemctl restart nftables (it flushed; the gate ran again)"
before=$(gates)
inside systemctl reload nftables.service
gate_ran_since "$before" || fail "the gate did not follow the nftables reload"
expect_port filtered "after systemctl reload nftables (it flushed; the gate ran again)"

# --- 5. removing the package removes the gate (nobody could knock any more)
inside dpkg -r portcullis >/dev/null
expect_port closed "package removed: the table is gone"
# Purging deletes the conffiles, never the system user (files may still belong to it)
# nor the grant records.
inside dpkg --purge portcullis >/dev/null
inside getent passwd portcullis >/dev/null || fail "purge removed the portcullis user"
[ -f "$tree/var/lib/portcullis/grants.db" ] || fail "purge removed the grant records"
log "ok: purged; the portcullis user and /var/lib/portcullis/grants.db are kept"
stop_container
log "PASS"
