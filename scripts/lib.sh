# Shared by scripts/*.sh: install Debian packages only when missing (CI and fresh machines).
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root (it creates network namespaces and nftables tables inside them)" >&2
    exit 1
  fi
}
