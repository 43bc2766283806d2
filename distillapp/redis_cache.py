"""Django's Redis cache, keeping its client.

Django's backend makes a new ``redis.Redis`` for every cache call, and redis-py fills ~170
response callbacks each time: ~0.1 ms of Python a call, three calls on every review action
(the session, today's verdicts read and kept; bench/README.md, review queue). A client is
thread-safe and holds no connection of its own (the pool does), so one per pool serves.
"""

from __future__ import annotations

from django.core.cache.backends import redis

from distillapp.embedded_redis import REDIS_DOWN


class RedisCacheClient(redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients[pool] = self._client(connection_pool=pool)
        return client


class RedisCache(redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient


def raw_client(alias: str = "default"):
    """The ``redis.Redis`` client behind a cache, for what Django's cache API has no call for
    (a hash: annotation.teacher.journal). Keys made with ``cache.make_key`` keep its prefix."""
    from django.core.cache import caches

    return caches[alias]._cache.get_client(write=True)


def quietly(call, *args):
    """A cache call, None while Redis is down: a count kept in the cache is then read from the
    database (the review page works without Redis), and a key not deleted expires."""
    try:
        return call(*args)
    except REDIS_DOWN:
        return None
