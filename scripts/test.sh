#!/usr/bin/env bash
# Set up the same environment as run.sh and run the whole test suite.
# Uses SQLite and an embedded Redis unless DATABASE_URL / REDIS_URL are set.
source "$(dirname "$0")/bootstrap.sh"
if [ -n "${CI:-}" ] || [ "${DISTILL_LINT:-1}" = "1" ]; then
  ruff check .
fi
exec python -m pytest "$@"
