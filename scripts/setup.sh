#!/usr/bin/env bash
# Set-up shared by the test and demo commands, idempotent: Debian packages (as root), a venv with the
# project installed, a running Docker Engine and the local busybox base image.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(docker.io docker-registry busybox-static git prometheus chromium file iproute2 mmdebstrap restic age
  openssh-server openssh-client openssl)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
bash scripts/dockerd.sh
bash scripts/base-image.sh
