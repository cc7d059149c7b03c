#!/usr/bin/env bash
# The tour, offline: installs and builds, starts a local registry, pushes a small multi-platform
# image built from testdata/demo, then inspects it, pulls it, runs it with chroot and, as root,
# writes a runc bundle and runs it. Everything it writes, the blob cache included, lives in
# temporary directories removed at the end: the user's own cache never records the demo's
# short-lived registry. PULL_UNPACK_DEMO_SKIP_SETUP=1 skips scripts/setup.sh (for a caller that
# already ran it, such as the test of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${PULL_UNPACK_DEMO_SKIP_SETUP:-}" = 1 ] || scripts/setup.sh

state=$(mktemp -d)
out=$(mktemp -d)
cleanup() {
  node testdata/registry.mjs stop --state-dir "$state" >/dev/null 2>&1 || true
  rm -rf "$state" "$out"
}
trap cleanup EXIT
XDG_CACHE_HOME="$out/cache"
export XDG_CACHE_HOME
registry=$(node testdata/registry.mjs start --state-dir "$state")
node testdata/push-demo.mjs "$registry"
image="$registry/demo/hello:latest"

run() { echo; echo "\$ $*"; "$@"; }
run ./bin/pull-unpack.js inspect "$image"
run ./bin/pull-unpack.js inspect --platform linux/arm/v7 "$image"
run ./bin/pull-unpack.js "$image" "$out/rootfs"
run find "$out/rootfs" -mindepth 1 -maxdepth 2
run cat "$out/rootfs/platform.txt"
if [ "$(id -u)" -eq 0 ] && [ -x "$out/rootfs/bin/sh" ]; then
  run chroot "$out/rootfs" /bin/hello
  run ./bin/pull-unpack.js --bundle "$image" "$out/bundle" -- /bin/hello
  run runc run --bundle "$out/bundle" "pull-unpack-demo-$$"
fi
