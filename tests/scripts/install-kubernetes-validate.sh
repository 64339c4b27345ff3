#!/usr/bin/env bash
# Caches PyPI's kubernetes-validate (offline schema checks of manifests against a given
# Kubernetes version, see shared/notes/tools.md) in a venv under
# $MQFLEET_CACHE/kubernetes-validate-$VERSION. Idempotent; a lock file makes two
# concurrent first runs safe.
set -euo pipefail

VERSION=1.37.0
CACHE=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}
DEST=$CACHE/kubernetes-validate-$VERSION
BIN=$DEST/bin/kubernetes-validate

log() { echo "[install-kubernetes-validate] $*" >&2; }

mkdir -p "$CACHE"
if [ -x "$BIN" ]; then exit 0; fi
exec 9>"$CACHE/kubernetes-validate.lock"
flock 9
if [ -x "$BIN" ]; then exit 0; fi
command -v python3 >/dev/null || { log "python3 is required"; exit 1; }
rm -rf "$DEST.tmp"
log "installing kubernetes-validate $VERSION from PyPI"
python3 -m venv "$DEST.tmp"
"$DEST.tmp/bin/pip" install -q "kubernetes-validate==$VERSION"
# A venv records its own path, so build it where it will live: move, then fix nothing.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
# Scripts carry the venv's path in their shebang; re-point them after the move.
sed -i "1s|^#!.*python.*$|#!$DEST/bin/python3|" "$DEST"/bin/kubernetes-validate
"$BIN" --version >&2
log "ready: $BIN"
