#!/usr/bin/env bash
# The whole test suite: installs what the tests need, starts a distribution registry on a free
# loopback port, runs vitest against it, and stops the registry again, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

state=$(mktemp -d)
# Tests never read or write the user's own blob cache.
XDG_CACHE_HOME=$(mktemp -d)
export XDG_CACHE_HOME
cleanup() {
  node testdata/registry.mjs stop --state-dir "$state" >/dev/null 2>&1 || true
  rm -rf "$state" "$XDG_CACHE_HOME"
}
trap cleanup EXIT
PULL_UNPACK_TEST_REGISTRY=$(node testdata/registry.mjs start --state-dir "$state")
export PULL_UNPACK_TEST_REGISTRY
echo "test: registry on $PULL_UNPACK_TEST_REGISTRY" >&2
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$state/results.json" "$@" || status=$?
# One plain closing line for CI logs: "N passed, N failed".
if [ -f "$state/results.json" ]; then
  node -e 'const r = require(process.argv[1]); console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""))' "$state/results.json"
fi
exit "$status"
