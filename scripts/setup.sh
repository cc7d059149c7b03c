#!/usr/bin/env bash
# Installs what pull-unpack's demo and tests need, when missing: Debian packages (the CNCF
# distribution registry, skopeo, umoci, runc, zstd, attr, htpasswd, a static busybox for test
# images, gnupg for test signing keys, tmux for the terminal tests, newuidmap/newgidmap for
# rootless bundles, zsh for the completion tests), the npm dependencies from the lockfile, and the
# compiled dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

# command-name:debian-package
needed=(
  docker-registry:docker-registry
  skopeo:skopeo
  umoci:umoci
  runc:runc
  zstd:zstd
  setfattr:attr
  htpasswd:apache2-utils
  busybox:busybox-static
  debootstrap:debootstrap
  script:bsdutils
  mkfs.btrfs:btrfs-progs
  gpg:gnupg
  tmux:tmux
  newuidmap:uidmap
  zsh:zsh
)
missing=()
for pair in "${needed[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
