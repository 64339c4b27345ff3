#!/usr/bin/env bash
# Installs umoci from Debian's archive (it builds and unpacks OCI image layouts without
# a daemon; `make images` and `mq-testbed image load` use it). Idempotent: does nothing
# when the package is already installed, and a lock file makes concurrent runs safe.
set -euo pipefail

APT_PKGS=(umoci binutils)
CACHE=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}

log() { echo "[install-umoci] $*" >&2; }

missing() {
  local out=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]}"
}

[ -z "$(missing)" ] && exit 0
mkdir -p "$CACHE"
exec 9>"$CACHE/umoci.lock"
flock 9
todo=$(missing)
[ -z "$todo" ] && exit 0
log "installing: $todo"
DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $todo >/dev/null
log "ready: $(umoci --version)"
