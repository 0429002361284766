#!/usr/bin/env bash
# Set up a machine without ROS 2 for this package: Debian libraries for headless MuJoCo (EGL) and the
# devices, then .venv with the pinned requirements and this package (editable). Idempotent: a second
# run only checks stamps and takes seconds. Not for a machine with ROS 2 installed: requirements.txt
# holds the ROS wheels (README, "On a robot", is the lab path).
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the headless browser of the dashboard's browser test (playwright drives it; no
# browser is downloaded at run time).
APT_PACKAGES=(python3-venv libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0 libhidapi-hidraw0 libhidapi-libusb0 chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=.venv/.requirements.sha256
# requirements.txt only includes the files of requirements/ (-r): hash them all.
want=$(cat requirements.txt requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
echo "setup: creating .venv and installing pinned requirements (about a minute with warm caches)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "setup: done"
