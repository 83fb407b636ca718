#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite against real services: PostgreSQL and Redis on
# 127.0.0.1 when they answer, otherwise throwaway instances the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/browser.sh
# Two processes (pytest-xdist; a file's tests stay on one, with its fixtures): much of a test's time is spent
# waiting for a server, a subprocess or a sweep, so two keep both cores busy. TEST_WORKERS=0 runs it in one process.
# Files are handed out longest first (tests/file_order.py; --record-file-durations refreshes their times).
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
