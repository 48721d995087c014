#!/usr/bin/env bash
# One entry point for a fresh Debian machine:
#   ./dev.sh demo    run the demo (buses, gateways, Mosquitto, fleet and dashboard on this machine)
#   ./dev.sh test    run the test suite (what CI runs)
#   ./dev.sh bench   run the benchmarks (writes bench/results.json)
#   ./dev.sh lint    ruff + mypy
# It installs Debian packages (as root) and a virtualenv with nox in .venv, then hands over.
set -euo pipefail
cd "$(dirname "$0")"

bash scripts/system-deps.sh

if [ ! -x .venv/bin/nox ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q "nox>=2024.4"
fi

case "${1:-}" in
    test|tests)  shift; exec .venv/bin/nox -s tests -- "$@" ;;
    bench)       shift; exec .venv/bin/nox -s bench -- "$@" ;;
    lint)        shift; exec .venv/bin/nox -s lint -- "$@" ;;
    soak)        shift; exec .venv/bin/nox -s soak -- "$@" ;;
    demo)
        shift
        .venv/bin/pip install -q -e .
        exec .venv/bin/edgefleet demo "$@" ;;
    *)
        sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
        exit 2 ;;
esac
