#!/usr/bin/env bash
# Installs what the local control plane needs and builds kube-apiserver,
# kube-controller-manager and kube-scheduler v1.20.2 from Debian's `kubernetes`
# source package (with the reflect2/json-iterator fix from
# shared/notes/local-control-plane.md), caching the binaries under
# $MQFLEET_CACHE/k8s-v1.20.2/bin. Idempotent; a lock file makes two concurrent
# first runs safe (the second waits, then finds the cache warm).
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}
DEST=$CACHE/k8s-$K8S_VERSION
BINS=(kube-apiserver kube-controller-manager kube-scheduler)
APT_PKGS=(golang-go make rsync jq dpkg-dev etcd-server openssl
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)

log() { echo "[install-k8s] $*" >&2; }

have_bins() {
  for b in "${BINS[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done
}

missing_pkgs() {
  local missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

ensure_deb_src() {
  local f=/etc/apt/sources.list.d/mqfleet-debsrc.sources
  [ -f "$f" ] && return 0
  # Debian's main entry, as deb-src (the kubernetes source lives in bookworm main).
  local uris signed
  uris=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  signed=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  cat >"$f" <<SRC
Types: deb-src
URIs: ${uris:-http://deb.debian.org/debian}
Suites: bookworm
Components: main
Signed-By: ${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}
SRC
  APT_UPDATED=0
}

apt_install() {
  local missing
  missing=$(missing_pkgs)
  ensure_deb_src
  if [ -n "$missing" ] || [ "${APT_UPDATED:-1}" = 0 ] || [ "${NEED_SOURCE:-0}" = 1 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
  if [ -n "$missing" ]; then
    log "installing: $missing"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

BUILD_DIR=
cleanup() { [ -z "$BUILD_DIR" ] || rm -rf "$BUILD_DIR"; }
trap cleanup EXIT

build() {
  # The 2.7 GB source tree is only needed for the build; the EXIT trap removes it.
  BUILD_DIR=$(mktemp -d "$CACHE/build.XXXXXX")
  cd "$BUILD_DIR"
  log "fetching the kubernetes source package"
  apt-get source -qq kubernetes >/dev/null 2>&1 || apt-get source kubernetes
  cd kubernetes-*/
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -f vendor/$p/*.go vendor/$p/*.s
    # shellcheck disable=SC2046
    cp $(ls /usr/share/gocode/src/$p/*.go /usr/share/gocode/src/$p/*.s 2>/dev/null | grep -v _test.go) vendor/$p/
  done
  export GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor
  mkdir -p .go/src/k8s.io
  ln -s ../../.. .go/src/k8s.io/kubernetes
  log "building ${BINS[*]} (cold: several minutes)"
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >build.log 2>&1 || {
    tail -50 build.log >&2; exit 1; }
  mkdir -p "$DEST/bin.tmp"
  for b in "${BINS[@]}"; do cp "_output/bin/$b" "$DEST/bin.tmp/"; done
  rm -rf "$DEST/bin"
  mv "$DEST/bin.tmp" "$DEST/bin"
  "$DEST/bin/kube-apiserver" --version >&2
}

mkdir -p "$CACHE"
if have_bins && [ -z "$(missing_pkgs)" ]; then exit 0; fi
exec 9>"$CACHE/k8s.lock"
flock 9
# Holding the lock, no build runs: leftovers of an interrupted one can go.
rm -rf "$CACHE"/build.*
if ! have_bins; then NEED_SOURCE=1; fi
apt_install
have_bins || build
log "ready: $DEST/bin"
