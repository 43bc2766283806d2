"""The teacher's answers between the call and their write, kept in the cache as they arrive.

A labelling job writes its answers a batch at a time; a worker killed in between took the
batch's answers with it, and the job asked (and paid) for them again when it resumed. Each
answer is now kept here under its job and request as it comes back, and a resumed job
takes it from here instead of asking (issue #23). Entries go once written, or a week after
the job's last answer.

A job's answers live in one Redis hash. `Journal.keep` gathers the answers that come back
within one turn of the event loop and writes them with one command when that turn ends:
a `cache.set` per answer, inside the loop, cost ~0.7 ms of CPU a call, a third of what the
bare SDK spends on it (bench/README.md, "Teacher", session 6). A worker killed within that
turn pays those few answers again.
"""

from __future__ import annotations

import asyncio
import logging
import pickle

from django.core.cache import cache

from distillapp.embedded_redis import REDIS_DOWN
from distillapp.redis_cache import raw_client

logger = logging.getLogger(__name__)

KEEP_SECONDS = 7 * 24 * 3600


def _key(job_id: int) -> str:
    return cache.make_key(f"teacher-journal:{job_id}")


class Journal:
    """One running job's journal (used from its event loop)."""

    def __init__(self, job_id: int) -> None:
        self.key = _key(job_id)
        self.pending: dict[str, list] = {}

    def keep(self, cache_key: str, answers: list) -> None:
        """Keep a paid answer: written when this turn of the event loop ends."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending[cache_key] = answers

    def flush(self) -> None:
        """Write what was kept since the last flush (also called as the job's run ends)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        try:
            pipe = raw_client().pipeline(transaction=False)
            pipe.hset(
                self.key, mapping={k: pickle.dumps(v, pickle.HIGHEST_PROTOCOL) for k, v in pending.items()}
            )
            pipe.expire(self.key, KEEP_SECONDS)
            pipe.execute()
        except REDIS_DOWN as error:  # the answers are still written with their batch; only a kill loses them
            logger.warning("Teacher answers not journalled (Redis is not answering): %s", error)


def kept(job_id: int, cache_keys: list[str]) -> dict[str, list]:
    """The answers kept for these requests of the job, by request."""
    if not cache_keys:
        return {}
    try:
        found = raw_client().hmget(_key(job_id), cache_keys)
    except REDIS_DOWN as error:
        logger.warning("Teacher journal not read (Redis is not answering): %s", error)
        return {}
    return {k: pickle.loads(v) for k, v in zip(cache_keys, found, strict=True) if v is not None}


def written(job_id: int, cache_keys: list[str]) -> None:
    if not cache_keys:
        return
    try:
        raw_client().hdel(_key(job_id), *cache_keys)
    except REDIS_DOWN:
        pass  # they expire; a written item is never asked again anyway
