#!/usr/bin/env bash
# Makes sure the browser tests have a Chromium: Debian's package (Playwright's own browser download is not used).
# Installs it with apt-get when it is missing and this user may (root, or passwordless sudo); otherwise says so and
# leaves the decision to the tests (skipped with the reason, or failed under CI=true).
set -uo pipefail
if [ -n "${HUB_TEST_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser tests: no chromium and no apt-get here; install Chromium or set HUB_TEST_CHROMIUM" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    as_root=()
elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "browser tests: chromium is missing and this user cannot install it (apt-get install chromium)" >&2
    exit 0
fi
echo "browser tests: installing Debian's chromium (once)…" >&2
"${as_root[@]}" apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "browser tests: apt-get install chromium failed" >&2
exit 0
