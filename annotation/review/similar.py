"""Find more like this: the unreviewed texts closest to one example, by embedding similarity.

Seeding a rare label by skipping through the queue is slow (on a 6-label task new to the
team, 246 cards for 5 examples of one label). From any card, a reviewer asks for the texts
most like it: cosine similarity of the bundled MiniLM's embeddings (normalised, so a dot
product) over the unreviewed, non-gold pool, through the app's embedding cache
(distillapp.embeddings): once a quick run or a quality run has embedded the pool, a
lookup costs a few milliseconds per thousand texts; a cold pool is embedded once
(``POOL_CAP`` texts at most per lookup, the newest first).
"""

from __future__ import annotations

import numpy as np

from annotation.models import Example, ReviewState

SIMILAR_COUNT = 50
POOL_CAP = 5000
MAX_LENGTH = 128  # the quick student's length: the same cache entries


def similar_to(example: Example, *, count: int = SIMILAR_COUNT, pool_cap: int = POOL_CAP) -> list[int]:
    """Ids of the `count` unreviewed, non-gold examples most similar to `example`, closest first."""
    from distillapp import embeddings
    from distillapp.ml import default_base_model

    pool = list(
        Example.objects.filter(
            project_id=example.project_id, is_gold=False, review_state=ReviewState.UNREVIEWED
        )
        .exclude(pk=example.pk)
        .order_by("-pk")
        .values_list("pk", "text")[:pool_cap]
    )
    if not pool:
        return []
    vectors = embeddings.embed(
        [example.text] + [text for _, text in pool],
        model_name=default_base_model(),
        max_length=MAX_LENGTH,
        cache_dir=embeddings.default_cache_dir(),
    )
    similarity = vectors[1:] @ vectors[0]
    best = np.argsort(-similarity, kind="stable")[:count]
    return [pool[i][0] for i in best]
