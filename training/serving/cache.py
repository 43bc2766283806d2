"""The request path's per-process cache of tokens, serving configs and active versions."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

logger = logging.getLogger(__name__)

# A serving process keeps each token it has seen, and each project's serving config and
# active version, for SERVING_CACHE_SECONDS: a prediction then makes no query of its own
# (its log row is written in the background: writer.py). The process that promotes, rolls
# back, revokes or changes settings forgets at once; every other process notices within
# the TTL, without a restart. bench/README.md ("Serving") has what this saves.

_cache: dict[tuple, tuple[float, object]] = {}
_CACHE_MAX_ENTRIES = 10_000
_clock = time.monotonic  # the cache's clock (tests move it forward)
# While the database does not answer, an entry past its TTL is still served this long: a
# restart of PostgreSQL does not stop predictions (their logs wait in writer.py's buffer). No
# token can be revoked meanwhile: revoking writes to the same database.
STALE_IF_DATABASE_DOWN_SECONDS = 300


def cached(key: tuple, load):
    ttl = settings.SERVING_CACHE_SECONDS
    if ttl <= 0:
        return load()
    now = _clock()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        value = load()
    except (OperationalError, InterfaceError) as error:
        if hit is None or hit[0] + STALE_IF_DATABASE_DOWN_SECONDS <= now:
            raise
        logger.warning("Serving %s from the cache %.0f s past its TTL: %s", key[0], now - hit[0], error)
        return hit[1]
    if len(_cache) >= _CACHE_MAX_ENTRIES:
        _cache.clear()
    _cache[key] = (now + ttl, value)
    return value


def forget_cached() -> None:
    """Drop this process's cached tokens, configs and versions (after a change to any of them)."""
    _cache.clear()


def forget_now_and_on_commit() -> None:
    # Now for this transaction's own reads, and again on commit, so a request that cached
    # the old state in between does not keep it.
    forget_cached()
    transaction.on_commit(forget_cached)
