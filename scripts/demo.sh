#!/usr/bin/env bash
# The two-minute tour, offline: installs and builds, starts a local registry, pushes a small
# multi-platform image built from testdata/demo, and shows what pull-unpack makes of it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

state=$(mktemp -d)
cleanup() {
  node testdata/registry.mjs stop --state-dir "$state" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
registry=$(node testdata/registry.mjs start --state-dir "$state")
node testdata/push-demo.mjs "$registry"
image="$registry/demo/hello:latest"

run() { echo; echo "\$ $*"; "$@"; }
run ./bin/pull-unpack.js inspect "$image"
run ./bin/pull-unpack.js inspect --platform linux/arm/v7 "$image"
