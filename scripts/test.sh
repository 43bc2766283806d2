#!/usr/bin/env bash
# Set up the same environment as run.sh and run the whole test suite.
# Uses SQLite and an embedded Redis unless DATABASE_URL / REDIS_URL are set.
source "$(dirname "$0")/bootstrap.sh"

# Browser tests drive Debian's chromium (never a downloaded browser build).
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing Debian chromium for the browser tests ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Browser tests need Chromium: sudo apt-get install chromium (or set CHROMIUM_PATH)." >&2
  fi
fi

ruff check .
exec python -m pytest "$@"
