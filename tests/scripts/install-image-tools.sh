#!/usr/bin/env bash
# Debian's daemonless image tools: umoci (builds the OCI images, `make images`), skopeo
# (copies them to and from registries) and docker-registry (the registry the tests push
# to on loopback). Idempotent: installs only what is missing; a lock makes two
# concurrent first runs safe.
set -euo pipefail
PKGS=(umoci skopeo docker-registry)
CACHE=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}
log() { echo "[install-image-tools] $*" >&2; }

missing() {
  local out=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

[ -z "$(missing)" ] && exit 0
mkdir -p "$CACHE"
exec 9>"$CACHE/image-tools.lock"
flock 9
todo=$(missing)
[ -z "$todo" ] && exit 0
log "installing: $todo"
# docker-registry's postinst would start a service where an init system runs; none here.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $todo >/dev/null
