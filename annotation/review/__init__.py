"""Review: people checking the teacher's answers, and the gold sets everything is measured on.

`next_card` is the review queue: its orders and filters, and the next card, claimed for one
reviewer; `verdicts` records the verdict on it (one by one or undone; `bulk` in bulk) and
`counts` counts what the card shows; `gold` draws gold sets, labels them
blind twice, adjudicates and freezes them; `quality` scores how likely each current label
is wrong (the queue's "likely errors" order); `similar` is "more like this" and the job that
embeds the pool for it. This package re-exports their public names,
so callers write `from annotation import review` and `review.queue(...)`. (The queue's
module is not called `queue`: the package's `queue` is the function.)
"""

from __future__ import annotations

from annotation.review.bulk import bulk_accept, bulk_accept_preview
from annotation.review.counts import REMAINING_CAP, queue_counts
from annotation.review.gold import (
    REJECT,
    gold_adjudicate,
    gold_draft,
    gold_draw,
    gold_freeze,
    gold_label_blind,
    gold_next_blind,
    gold_next_disagreement,
    gold_status,
)
from annotation.review.next_card import (
    STRATEGIES,
    QueueFilter,
    first_served,
    queue,
    resolved_strategy,
    review_next,
)
from annotation.review.quality import latest_quality_run, quality_run, quality_run_start
from annotation.review.similar import (
    INTAKE_INDEX_EVERY,
    Similar,
    similar_to,
    similarity_index_run,
    similarity_index_start,
)
from annotation.review.verdicts import (
    InvalidAnswer,
    NotServed,
    ReviewError,
    queue_card,
    review_record,
    review_undo,
    teacher_proposal,
    with_teacher_proposal,
)

__all__ = [
    "INTAKE_INDEX_EVERY",
    "REJECT",
    "REMAINING_CAP",
    "STRATEGIES",
    "InvalidAnswer",
    "NotServed",
    "QueueFilter",
    "ReviewError",
    "Similar",
    "bulk_accept",
    "bulk_accept_preview",
    "first_served",
    "gold_adjudicate",
    "gold_draft",
    "gold_draw",
    "gold_freeze",
    "gold_label_blind",
    "gold_next_blind",
    "gold_next_disagreement",
    "gold_status",
    "quality_run",
    "quality_run_start",
    "latest_quality_run",
    "queue",
    "queue_card",
    "queue_counts",
    "resolved_strategy",
    "review_next",
    "review_record",
    "review_undo",
    "similar_to",
    "similarity_index_run",
    "similarity_index_start",
    "teacher_proposal",
    "with_teacher_proposal",
]
