"""The teacher's answers between the call and their write, kept in the cache as they arrive.

A labelling job writes its answers a batch at a time; a worker killed in between took the
batch's answers with it, and the job asked (and paid) for them again when it resumed. Each
answer is now kept here under its job and request the moment it comes back, and a resumed job
takes it from here instead of asking (issue #23). Entries go once written, or after a week.
"""

from __future__ import annotations

import logging

from django.core.cache import cache

from distillapp.embedded_redis import REDIS_DOWN

logger = logging.getLogger(__name__)

KEEP_SECONDS = 7 * 24 * 3600


def _key(job_id: int, cache_key: str) -> str:
    return f"teacher-journal:{job_id}:{cache_key}"


def keep(job_id: int, cache_key: str, answers: list) -> None:
    try:
        cache.set(_key(job_id, cache_key), answers, KEEP_SECONDS)
    except REDIS_DOWN as error:  # the answer is still written with its batch; only a kill loses it
        logger.warning("Teacher answer not journalled (Redis is not answering): %s", error)


def kept(job_id: int, cache_keys: list[str]) -> dict[str, list]:
    """The answers kept for these requests of the job, by request."""
    if not cache_keys:
        return {}
    try:
        found = cache.get_many([_key(job_id, k) for k in cache_keys])
    except REDIS_DOWN as error:
        logger.warning("Teacher journal not read (Redis is not answering): %s", error)
        return {}
    return {k: found[_key(job_id, k)] for k in cache_keys if _key(job_id, k) in found}


def written(job_id: int, cache_keys: list[str]) -> None:
    try:
        cache.delete_many([_key(job_id, k) for k in cache_keys])
    except REDIS_DOWN:
        pass  # they expire; a written item is never asked again anyway
