"""Sessions kept in the database and read through the Redis cache, that outlive a Redis outage.

Django's cached_db store already writes every session to the database; only its reads go
through the cache, and a cache that does not answer there makes every signed-in page fail. Here
a Redis error on the cache side falls back to the database, in one log line a request.
Deleting (signing out) still needs Redis: a cached copy left behind would sign the user in
again once Redis is back. The cached copy goes first, so during an outage nothing changes and
the user is told (503) to try again.
"""

from __future__ import annotations

import logging

from django.contrib.sessions.backends import cached_db, db

from distillapp.embedded_redis import REDIS_DOWN

logger = logging.getLogger(__name__)


class SessionStore(cached_db.SessionStore):
    def _redis_down(self, error: Exception) -> None:
        if not getattr(self, "_said_redis_down", False):
            self._said_redis_down = True
            logger.warning("Sessions read from the database: Redis is not answering (%s)", error)

    def load(self):
        try:
            return super().load()
        except REDIS_DOWN as error:  # the cache refused the copy it was given: the data is read
            self._redis_down(error)
            return db.SessionStore.load(self)

    def exists(self, session_key):
        try:
            return super().exists(session_key)
        except REDIS_DOWN as error:
            self._redis_down(error)
            return db.SessionStore.exists(self, session_key)

    def delete(self, session_key=None):
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self._cache.delete(self.cache_key_prefix + session_key)  # raises while Redis is away
        db.SessionStore.delete(self, session_key)
