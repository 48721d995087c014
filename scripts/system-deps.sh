#!/usr/bin/env bash
# Install the Debian packages edgefleet's tests and demo run against. Idempotent and quiet when
# everything is present. As root on Debian it installs; otherwise it names what is missing.
set -euo pipefail

PACKAGES=(python3-venv python3-pip mbpoll mosquitto mosquitto-clients socat postgresql victoria-metrics chromium)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "edgefleet: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "edgefleet: missing system packages: ${missing[*]}" >&2
    echo "edgefleet: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
