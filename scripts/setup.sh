#!/usr/bin/env bash
# Installs every Debian package troupe needs to build, test and run. Idempotent, non-interactive.
# Usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libcaf-dev
  libucx-dev ucx-utils libssl-dev
  libmsgpack-cxx-dev
  libboost-dev libboost-test-dev
  libspdlog-dev
  nlohmann-json3-dev
  libtoml11-dev
  clang
  openssh-server openssh-client iproute2 nftables procps
  curl prometheus nodejs
  python3
  tmux chromium  # the admin console's tests: troupe admin driven in tmux, the status page in headless Chromium
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
else
  echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm: Debian's package, unless the installed nodejs brings its own (NodeSource's does, and
# conflicts with Debian's npm).
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi

# The official openai npm package, used only by tests/http/openai_sdk.mjs (the HTTP API against
# the SDK). Installed next to the test, in tests/http/node_modules (ignored by git).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v npm >/dev/null && [ ! -d "$here/tests/http/node_modules/openai" ]; then
  echo "setup: npm install openai into tests/http/node_modules"
  (cd "$here/tests/http" && npm install --no-audit --no-fund --no-save --loglevel=error openai@4)
fi
echo "setup: done"
