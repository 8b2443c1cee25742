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
  libopenblas-dev
  nlohmann-json3-dev
  libtoml11-dev
  clang
  openssh-server openssh-client iproute2 nftables
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
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
