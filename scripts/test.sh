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

# System tools some tests need, as "command debian-package" pairs: each
# package is installed when its command is missing. Add to this list
# rather than writing another install step.
SYSTEM_TOOLS=(
    "clang clang"   # libFuzzer targets (tests/engine/test_fuzz_c.py)
    "valgrind valgrind"   # constant-time checks (tests/engine/test_constant_time.py)
    # The NAT lab (tests/netlab): namespaces, NAT rules, STUN and UPnP
    # servers. miniupnpd-iptables, not the nftables build: the lab's UPnP
    # NAT runs on iptables-legacy (docs/design/0017-nat-lab.md).
    "ip iproute2"
    "tc iproute2"
    "iptables iptables"
    "iptables-legacy iptables"
    "conntrack conntrack"
    "turnserver coturn"
    "miniupnpd miniupnpd-iptables"
    "upnpc miniupnpc"
)

# Installs only as root with apt-get (CI containers, the lab); elsewhere it
# says what is missing and the tests needing it skip (or fail under CI).
ensure_system_tools() {
    local entry cmd pkg missing=()
    for entry in "${SYSTEM_TOOLS[@]}"; do
        read -r cmd pkg <<<"$entry"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "missing system packages: ${missing[*]} (install them, or run as root)" >&2
        return 0
    fi
    echo "installing ${missing[*]}"
    # A failed install must not hide the other tests' results: the tests
    # that need the tool report it.
    if ! { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
        echo "installing ${missing[*]} failed" >&2
    fi
}

section "system tools"
ensure_system_tools

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
ruff_paths=(crust tests examples docs/_hooks)
[[ -d benchmarks ]] && ruff_paths+=(benchmarks)
# The docs are built (mkdocs build --strict) by tests/packaging/test_docs.py and the
# wheel checked end to end by tests/packaging/test_wheel.py, inside pytest below.
"$VENV/bin/ruff" check "${ruff_paths[@]}"

section "mypy (strict, crust/)"
"$VENV/bin/mypy"

section "pytest"
# Run from outside the source tree so `import crust` finds the installed
# package with its compiled _core, never the sources next to it.
# tests/packaging/test_build.py checks this when CRUST_TEST_INSTALLED is set.
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
