#!/usr/bin/env bash
# Sets up .venv if needed and runs Fashion Hub on the embedded default (SQLite, in-process workers,
# embedded vector store, all under $HUB_HOME, default ./.hub). Extra arguments go to `hub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/hub serve "$@"
