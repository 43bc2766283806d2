"""Find more like this: the unreviewed texts closest to one example, by embedding similarity.

Seeding a rare label by skipping through the queue is slow (on a 6-label task new to the
team, 246 cards for 5 examples of one label). From any card, a reviewer asks for the texts
most like it: cosine similarity of the bundled MiniLM's embeddings (normalised, so a dot
product) over the unreviewed, non-gold pool (the newest ``POOL_CAP``).

The request reads vectors from the app's embedding cache (distillapp.embeddings) and never
embeds: embedding a cold pool of 150 texts took 9.4 s inside the request (issue #23). The
project's ``SimilarityIndex`` job embeds the pool in a worker; imports and API traffic
queue it, and a search that finds texts without a vector queues it too. Until it is done
the search ranks what is indexed so far and says how much that is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Example, ReviewState, SimilarityIndex

SIMILAR_COUNT = 50
POOL_CAP = 5000
MAX_LENGTH = 128  # the quick student's length: the same cache entries
# Texts per cache chunk the index job writes: a search sees the job's progress this often.
INDEX_CHUNK = 256
# API traffic queues the index at most this often: a job a request would cost a worker a
# model load for a text or two (bench/README.md "Fault bench"). A search queues it at once.
INTAKE_INDEX_EVERY = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class Similar:
    """A search's answer: the closest ids, and how much of the searched pool had a vector."""

    ids: list[int]
    ready: int  # pool texts with a cached vector
    total: int  # pool texts searched (the newest POOL_CAP unreviewed, non-gold)
    has_card: bool  # the card's own text has a vector (else nothing can be ranked yet)
    index: SimilarityIndex | None = None

    @property
    def is_indexing(self) -> bool:
        return not self.has_card or self.ready < self.total


def _pool(project_id: int, *, exclude: int | None = None, cap: int | None = None) -> list[tuple[int, str]]:
    pool = Example.objects.filter(project_id=project_id, is_gold=False, review_state=ReviewState.UNREVIEWED)
    if exclude is not None:
        pool = pool.exclude(pk=exclude)
    pool = pool.order_by("-pk").values_list("pk", "text")
    return list(pool[:cap] if cap else pool)


def _cache() -> dict:
    from distillapp import embeddings
    from distillapp.ml import default_base_model

    return {
        "model_name": default_base_model(),
        "max_length": MAX_LENGTH,
        "cache_dir": embeddings.default_cache_dir(),
    }


def similar_to(example: Example, *, count: int = SIMILAR_COUNT, pool_cap: int = POOL_CAP) -> Similar:
    """The `count` unreviewed, non-gold examples most like `example`, closest first, among
    those whose vector is cached; queues the project's index when some are not."""
    from distillapp import embeddings

    pool = _pool(example.project_id, exclude=example.pk, cap=pool_cap)
    vectors = embeddings.cached_vectors([example.text] + [text for _, text in pool], **_cache())
    card, rest = vectors[0], vectors[1:]
    ready = [i for i, vector in enumerate(rest) if vector is not None]
    ids: list[int] = []
    if card is not None and ready:
        similarity = np.stack([rest[i] for i in ready]) @ card
        best = np.argsort(-similarity, kind="stable")[:count]
        ids = [pool[ready[i]][0] for i in best]
    index = None
    if card is None or len(ready) < len(pool):
        similarity_index_start(project_id=example.project_id)
        index = SimilarityIndex.objects.filter(project_id=example.project_id).first()
    return Similar(ids=ids, ready=len(ready), total=len(pool), has_card=card is not None, index=index)


def similarity_index_start(*, project_id: int, unless_ran_within: dt.timedelta | None = None) -> bool:
    """Queue the project's index job unless one is waiting or running (or, with
    `unless_ran_within`, ended that recently); True if queued.

    One row per project goes back to pending by a conditional update, so of two imports or
    intakes at the same moment one queues it. A running job looks for new texts again before
    it ends; what arrives after that is the next trigger's."""
    from distillapp import jobs

    done = [SimilarityIndex.Status.SUCCEEDED, SimilarityIndex.Status.FAILED]
    try:
        with transaction.atomic():
            index, created = SimilarityIndex.objects.get_or_create(project_id=project_id)
    except IntegrityError:  # the project is gone (a traffic write for a deleted project)
        return False
    ended = SimilarityIndex.objects.filter(pk=index.pk, status__in=done)
    if unless_ran_within is not None:
        ended = ended.exclude(finished_at__gt=timezone.now() - unless_ran_within)
    if not created and not ended.update(
        status=SimilarityIndex.Status.PENDING, error="", worker="", started_at=None, finished_at=None
    ):
        return False
    jobs.enqueue(SimilarityIndex, index.pk)
    return True


# Texts one run embeds at most (~10 s on 2 cores): a big pool is embedded over several runs,
# each queued again behind what is waiting (the worker takes the "llm" queue first), so a
# labelling job is never held up for long by one worker embedding a whole pool.
INDEX_RUN_TEXTS = 512


def similarity_index_run(*, index: SimilarityIndex) -> SimilarityIndex:
    """Embed up to INDEX_RUN_TEXTS of the project's unreviewed, non-gold texts that have no
    cached vector (newest first: the search reads the newest POOL_CAP), recording progress on
    the row; queue the next run when more are missing."""
    from distillapp import embeddings, jobs

    cache = _cache()
    with jobs.running(SimilarityIndex, index.pk) as held:
        texts = [text for _, text in _pool(index.project_id)]
        missing = [
            t for t, v in zip(texts, embeddings.cached_vectors(texts, **cache), strict=True) if v is None
        ]
        batch = missing[:INDEX_RUN_TEXTS]
        SimilarityIndex.objects.filter(pk=index.pk).update(texts_total=len(batch), texts_done=0)

        def progress(done: int, total: int) -> None:
            SimilarityIndex.objects.filter(pk=index.pk).update(
                texts_done=min(len(batch), done * embeddings.EMBED_BATCH)
            )

        if batch:
            embeddings.embed_cached(batch, **cache, on_batch=progress, chunk_texts=INDEX_CHUNK)
        held.succeed(error="")
    if len(missing) > len(batch):
        similarity_index_start(project_id=index.project_id)
    index.refresh_from_db()
    return index
