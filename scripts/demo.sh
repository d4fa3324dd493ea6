#!/usr/bin/env bash
# The demo command of the README's quick start:
#
#   bash scripts/demo.sh [crust demo options...]
#
# Builds and installs crust into .venv (as scripts/test.sh does), then runs
# `crust demo`. Options go to `crust demo` (see `crust demo --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CRUST_VENV:-$ROOT/.venv}"

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
echo "installing crust into $VENV (first time: about a minute)..."
"$VENV/bin/python" -m pip install --quiet "$ROOT"
cd "$(mktemp -d)"
exec "$VENV/bin/crust" demo "$@"
