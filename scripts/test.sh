#!/usr/bin/env bash
# Install peerstack and run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
# pytest exits 5 when it collected no tests: nothing failed, but nothing ran either.
if [ "$code" -eq 5 ]; then
    echo "no tests collected"
    exit 0
fi
exit "$code"
