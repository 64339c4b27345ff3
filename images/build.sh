#!/usr/bin/env bash
# Builds the OCI images of mq-operator, mq-broker and mq-console without a daemon.
#
# For each binary: stage a root filesystem holding exactly what it needs (the binary
# without debug info, its ldd closure, a non-root user, nsswitch.conf, /tmp), then turn
# it into an OCI image layout with umoci. Outputs, per image <name>:
#   target/images/<name>          OCI layout, tag ${TAG:-<workspace version>}
#   target/images/<name>.rootfs/  the staged root (what images/Containerfile copies)
#
# Usage: images/build.sh [name...]   (default: all three)
# Env:   PROFILE=debug|release (default debug), TAG, SOURCE (the source label).
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"

PROFILE=${PROFILE:-debug}
OUT=${IMAGES_DIR:-$ROOT_DIR/target/images}
USER_ID=65532
USER_NAME=mqfleet
DEFAULT_NAMES=(mq-operator mq-broker mq-console)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=("${DEFAULT_NAMES[@]}")

log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }

# The version and repository of [workspace.package] in Cargo.toml.
workspace_field() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^'"$1"' *= *"\(.*\)"/\1/p' Cargo.toml | head -n1
}

VERSION=$(workspace_field version)
[ -n "$VERSION" ] || die "no version in [workspace.package] of Cargo.toml"
TAG=${TAG:-$VERSION}
SOURCE=${SOURCE:-$(workspace_field repository)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# Every timestamp (files, config, history) is the last commit's, so the same binaries
# give the same digests and reloading an unchanged image is a no-op.
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
case "$PROFILE" in debug|release) ;; *) die "PROFILE must be debug or release, not $PROFILE" ;; esac
command -v umoci >/dev/null || die "umoci is missing: run tests/scripts/install-image-tools.sh"
command -v objcopy >/dev/null || die "objcopy is missing: apt-get install binutils"

# Copies a file to the same path under the root, following symlinks so the real
# content lands at the path the loader asks for.
copy_in() {
  local root=$1 path=$2
  mkdir -p "$root$(dirname "$path")"
  cp -L --preserve=mode "$path" "$root$path"
}

# Absolute paths of the shared objects (and the loader) that `ldd` lists for $1.
ldd_closure() {
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u
}

stage_root() {
  local name=$1 bin=$2 root=$3
  rm -rf "$root"
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
  objcopy --strip-debug "$bin" "$root/usr/local/bin/$name"
  chmod 0755 "$root/usr/local/bin/$name"
  local lib
  for lib in $(ldd_closure "$bin"); do copy_in "$root" "$lib"; done
  [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "$name: the loader is not in its ldd closure"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n%s:x:%s:%s:%s:/tmp:/usr/sbin/nologin\n' \
    "$USER_NAME" "$USER_ID" "$USER_ID" "$USER_NAME" >"$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$USER_NAME" "$USER_ID" >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  chown -R 0:0 "$root" 2>/dev/null || true
  find "$root" -exec touch -h -d "@$EPOCH" {} +
}

build_layout() {
  local name=$1 root=$2 layout=$3 work=$4
  local image="$layout:$TAG"
  rm -rf "$layout" "$work"
  umoci init --layout "$layout"
  umoci new --image "$image"
  umoci unpack --image "$image" "$work/bundle" >/dev/null
  cp -a "$root/." "$work/bundle/rootfs/"
  touch -d "@$EPOCH" "$work/bundle/rootfs"
  umoci repack --image "$image" --history.created "$CREATED" "$work/bundle"
  umoci config --image "$image" \
    --created "$CREATED" \
    --history.created "$CREATED" \
    --author "mqfleet" \
    --config.entrypoint "/usr/local/bin/$name" \
    --config.user "$USER_ID:$USER_ID" \
    --config.workingdir / \
    --config.env "PATH=/usr/local/bin" \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.source=$SOURCE" \
    --history.created_by "images/build.sh $name"
  umoci gc --layout "$layout"
  rm -rf "$work"
}

mkdir -p "$OUT"
for name in "${NAMES[@]}"; do
  bin="$ROOT_DIR/target/$PROFILE/$name"
  [ -x "$bin" ] || die "$bin is not built (make images builds it; or cargo build -p $name --bins$([ "$PROFILE" = release ] && echo ' --release'))"
  start=$SECONDS
  stage_root "$name" "$bin" "$OUT/$name.rootfs"
  build_layout "$name" "$OUT/$name.rootfs" "$OUT/$name" "$OUT/.work-$name"
  rootfs_size=$(du -sh "$OUT/$name.rootfs" | cut -f1)
  layout_size=$(du -sh "$OUT/$name" | cut -f1)
  echo "$name:$TAG  layout $layout_size ($OUT/$name), root filesystem $rootfs_size, $((SECONDS - start))s"
done
