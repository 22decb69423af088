#!/usr/bin/env bash
# Install everything peerstack needs on a fresh Debian 12 machine (run as root),
# into .venv/ at the top of the repository. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt.sh
# memcached: Swift's tempauth keeps tokens there (peerstack bench compare);
# wrk: the load generator of peerstack bench http.
apt_install python3 python3-venv python3-dev gcc libffi-dev attr iproute2 procps rclone wrk memcached

# Python 3.11 is Debian 12's python3; prefer an explicit python3.11 where several exist.
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test,bench]' -r requirements-clients.txt

# QEMU/libvirt for the compute agent (and libvirt-python, which builds against libvirt-dev).
bash scripts/install-compute.sh
