"""The training app's pages, by concern: runs (launch, progress, evaluation jobs), results
(evaluation pages, comparison) and deploy (promotion, exports, tokens, monitoring, value, cost)."""

from training.views.deploy import (
    cost,
    deploy,
    export_job,
    monitor,
    promote,
    review_value,
    rollback,
    token_create,
    token_revoke,
)
from training.views.results import compare, evaluation, evaluation_examples, evaluation_preference
from training.views.runs import (
    evaluation_job,
    run_create,
    run_detail,
    run_download,
    run_evaluate,
    runs,
)

__all__ = [
    "compare",
    "cost",
    "deploy",
    "evaluation",
    "evaluation_examples",
    "evaluation_preference",
    "evaluation_job",
    "export_job",
    "monitor",
    "promote",
    "review_value",
    "rollback",
    "run_create",
    "run_detail",
    "run_download",
    "run_evaluate",
    "runs",
    "token_create",
    "token_revoke",
]
