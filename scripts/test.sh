#!/usr/bin/env bash
# The whole test suite: installs what the tests need, starts a distribution registry on a free
# loopback port, runs vitest against it, and stops the registry again, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Types, lint and formatting first (npm run lint:fix repairs most of what they report); the
# tests run either way, and a lint failure fails the suite at the end.
lint_status=0
npm run --silent lint || lint_status=$?

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
if [ "$lint_status" -ne 0 ]; then
  echo "test: npm run lint failed (run npm run lint:fix)" >&2
  [ "$status" -ne 0 ] || status=$lint_status
fi
exit "$status"
