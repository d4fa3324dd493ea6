#!/usr/bin/env bash
# The one test command (README and CI run exactly this):
#
#   bash scripts/test.sh [pytest args...]
#
# Builds and installs crust (non-editable, so the compiled extension is the
# one a user gets) into .venv, then runs ruff, mypy and pytest against the
# INSTALLED package. Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CRUST_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

section() { printf '\n==== %s ====\n' "$*"; }

section "environment: $VENV"
if [[ ! -x "$PY" ]]; then
    python3 -m venv "$VENV"
fi
"$PY" --version

section "build and install crust (pip install .[test])"
cd "$ROOT"
"$PY" -m pip install ".[test]"

section "ruff"
# benchmarks/ may not exist yet in every checkout.
ruff_paths=(crust tests)
[[ -d benchmarks ]] && ruff_paths+=(benchmarks)
"$VENV/bin/ruff" check "${ruff_paths[@]}"

section "mypy (strict, crust/)"
"$VENV/bin/mypy"

section "pytest"
# Run from outside the source tree so `import crust` finds the installed
# package with its compiled _core, never the sources next to it.
# tests/test_build.py checks this when CRUST_TEST_INSTALLED is set.
# Paths given relative to the repository root are made absolute; without
# any, the whole suite runs.
args=()
have_paths=0
for arg in "$@"; do
    if [[ "$arg" != -* && -e "$ROOT/${arg%%::*}" ]]; then
        args+=("$ROOT/$arg")
        have_paths=1
    else
        args+=("$arg")
    fi
done
[[ $have_paths -eq 1 ]] || args+=("$ROOT/tests")
RUN_DIR="$(mktemp -d)"
trap 'rm -rf "$RUN_DIR"' EXIT
cd "$RUN_DIR"
"$PY" -c 'import crust, crust._core, sys; print("testing", crust.__file__, "with", crust._core.__file__)'
set +e
CRUST_TEST_INSTALLED=1 "$VENV/bin/pytest" --rootdir "$ROOT" -c "$ROOT/pyproject.toml" \
    -p no:cacheprovider "${args[@]}"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "pytest collected no tests: failing (exit 5)" >&2
fi
exit "$status"
