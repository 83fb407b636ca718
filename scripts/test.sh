#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite against real services: PostgreSQL and Redis on
# 127.0.0.1 when they answer, otherwise throwaway instances the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/browser.sh
exec .venv/bin/python -m pytest "$@"
