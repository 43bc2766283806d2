"""Training runs and evaluations: from current labels to a measured student.

One module per stage (`dataset`, `runs`, `evaluation`); this package re-exports their
public names, so callers write `from training import services`. A bench or test that
replaces a name must replace it in the module that looks it up (`training.services.runs`).
"""

from __future__ import annotations

from training.services.advice import label_source_advice, recommended_run
from training.services.dataset import (
    ROUGH_GUESS,
    TrainingError,
    approx_tokens,
    measured_runs,
    split_validation,
    time_estimate,
    training_estimate,
    training_set,
)
from training.services.evaluation import (
    compare_runs,
    error_analysis,
    evaluate_run,
    evaluate_system,
    evaluate_teacher,
    evaluation_job_run,
    evaluation_job_start,
    imported_systems,
    latest_system_evaluations,
    latest_teacher_evaluation,
)
from training.services.runs import (
    base_model_choices,
    default_ensemble_members,
    ensemble_candidates,
    run_claim,
    run_create,
    run_defaults,
    run_execute,
    run_start,
)

__all__ = [
    "ROUGH_GUESS",
    "TrainingError",
    "approx_tokens",
    "base_model_choices",
    "compare_runs",
    "default_ensemble_members",
    "ensemble_candidates",
    "error_analysis",
    "evaluate_run",
    "evaluate_system",
    "evaluate_teacher",
    "evaluation_job_run",
    "evaluation_job_start",
    "imported_systems",
    "label_source_advice",
    "recommended_run",
    "latest_system_evaluations",
    "latest_teacher_evaluation",
    "measured_runs",
    "run_claim",
    "run_create",
    "run_defaults",
    "run_execute",
    "run_start",
    "split_validation",
    "time_estimate",
    "training_estimate",
    "training_set",
]
