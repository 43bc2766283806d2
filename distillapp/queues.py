"""Enqueueing jobs: always after the transaction that created their rows commits."""

from __future__ import annotations

import logging
from collections.abc import Callable

import django_rq
from django.db import transaction

logger = logging.getLogger(__name__)


def worker_queues(*, short_workers: int) -> list[str]:
    """The queues a worker for every lane listens to, in the order it takes them.

    With workers of its own on the short lane, such a worker takes that lane last: a big
    pool's similarity index is hundreds of short runs, each queued again as the last ends, and
    taken first they held a fine-tune back for as long as the index ran (the fault bench: a
    20,000-row import and unsure API traffic, two index streams, the run pending for minutes).
    Without one, the settings' order: a gold evaluation never waits behind a fine-tune.
    """
    from django.conf import settings

    names = list(settings.RQ_QUEUE_NAMES)
    if short_workers > 0:
        names.remove(settings.SHORT_QUEUE)
        names.append(settings.SHORT_QUEUE)
    return names


def enqueue_on_commit(
    queue_name: str,
    func_path: str,
    *args: object,
    on_error: Callable[[Exception], object] | None = None,
) -> None:
    """Queue `func_path(*args)` once the current transaction commits.

    A job queued before its row is committed could start, find nothing and
    quit; so the enqueue waits for the commit. If Redis cannot be reached,
    `on_error` records that on the job's row instead of losing the request.
    """

    def _enqueue() -> None:
        try:
            django_rq.get_queue(queue_name).enqueue(func_path, *args)
        except Exception as exc:  # redis.ConnectionError and friends
            logger.exception("Could not enqueue %s%r on %r", func_path, args, queue_name)
            if on_error is None:
                raise
            on_error(exc)

    transaction.on_commit(_enqueue)
