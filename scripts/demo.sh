#!/usr/bin/env bash
# Install peerstack and start (or keep) the 3-node demo cluster under ./var/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/peerstack demo "$@"
