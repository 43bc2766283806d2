"""The training set: which examples and labels a student learns from, the validation split, the estimate."""

from __future__ import annotations

import random

from django.db.models import Q

from annotation.models import Example, Project
from tasks import AnswerError
from training.models import TrainingRun, default_hyperparameters

# Examples x epochs per second of training MiniLM-L6 on a 2-core CPU, for the launch
# form's estimate until this installation has finished a run of its own (then that run's
# measured speed is used). 35 on an AMD EPYC (AVX2), 55 on a Xeon with AVX-512
# (bench/banking77_distill.py, bench/README.md).
CPU_EXAMPLES_PER_SECOND = 35.0

# The first estimate (no run measured here yet) is a whole run, not just the trainer's
# loop, and it scales with the texts' length: Banking77's 35 examples/s are 15-token
# texts, the demo tickets have 30. Measured on the shared 2-core sandbox (150 demo
# tickets, MiniLM-L6, max_length 64): the trainer did about 200 tokens x epochs a second,
# and a run also spends a fixed ~15 s importing torch, loading the model, validating and
# saving, then predicts every non-gold example (forward only, ~3x the training rate).
# The demo's 4-epoch run that took 1.7 min was estimated at 0.3 min before; this says
# 1.9 min. A finished run here replaces these numbers with its own.
CPU_TRAIN_TOKENS_PER_SECOND = 200.0
CPU_PREDICT_TOKENS_PER_SECOND = 600.0
RUN_FIXED_SECONDS = 15.0


def approx_tokens(text: str, max_length: int) -> float:
    """MiniLM's word pieces for English, within a few percent on the demo and Banking77:
    about four characters a token, plus [CLS] and [SEP]."""
    return min(max_length, len(text) / 4 + 2)


def measured_cpu_speed() -> tuple[float, TrainingRun | None]:
    """Examples x epochs per second of the latest finished CPU run here, else the default."""
    for run in TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED,
        kind=TrainingRun.Kind.FINETUNE,
        device="cpu",
        train_seconds__gte=30,
    ).order_by("-finished_at")[:5]:
        examples = (run.counts or {}).get("train")
        epochs = {**default_hyperparameters(), **run.hyperparameters}.get("epochs")
        if examples and epochs:
            return examples * float(epochs) / run.train_seconds, run
    return CPU_EXAMPLES_PER_SECOND, None


class TrainingError(ValueError):
    """A training request that cannot be carried out, with a message for the user."""


def training_set(
    *,
    project: Project,
    label_source: str = TrainingRun.LabelSource.ALL_CURRENT,
    teacher_min_confidence: float = 0.0,
    include_synthetic: bool = False,
) -> list[dict]:
    """The examples a student learns from, with their current labels.

    Never a gold example (not_gold(), the one method every training path
    uses), never a rejected one (its current label is empty), synthetic ones
    only when asked, and only labels the project has.
    """
    examples = (
        Example.objects.for_project(project)
        .not_gold()
        .with_current_label()
        .filter(current_label__isnull=False)
    )
    if not include_synthetic:
        examples = examples.exclude(source=Example.Source.SYNTHETIC)
    if label_source == TrainingRun.LabelSource.REVIEWED:
        examples = examples.filter(label_state="reviewed")
    elif label_source == TrainingRun.LabelSource.REVIEWED_PLUS_TEACHER:
        examples = examples.filter(
            Q(label_state="reviewed")
            | Q(label_state="proposed", teacher_confidence__gte=teacher_min_confidence)
        )
    elif label_source != TrainingRun.LabelSource.ALL_CURRENT:
        raise TrainingError(f"Unknown label source {label_source!r}.")
    task = project.task
    rows = []
    for pk, text, label, state, digest, source, confidence, quality, issue in examples.order_by(
        "pk"
    ).values_list(
        "pk",
        "text",
        "current_label",
        "label_state",
        "content_hash",
        "source",
        "teacher_confidence",
        "quality_score",
        "label_issue",
    ):
        try:
            # The answer in its normal form; one the project's labels (fields) no longer fit is left out.
            label = task.validate(label, text=text)
        except AnswerError:
            continue
        rows.append(
            {
                "id": pk,
                "text": text,
                "label": label,
                "state": state,
                "hash": digest,
                "source": source,
                "confidence": confidence,
                "quality": quality,
                "issue": issue,
            }
        )
    return rows


# Noise handling of unreviewed labels (the launch form's choice, kept in the run's
# hyperparameters as "noise_handling"); reviewed labels are always kept at full weight.
NOISE_HANDLING = {
    "none": "None: every label counts the same",
    "prune": "Leave out unreviewed labels flagged as likely wrong",
    "weight": "Weight unreviewed labels by the teacher's confidence",
    "prune+weight": "Both",
}
# Where the quality run did not decide (``Example.label_issue`` null: a task type that only
# scores), a label is flagged when cleanlab's normalized margin is below 0.5: another label is
# more likely than the given one (out of sample). Classification decides with cleanlab's
# find_label_issues (tasks/classification/quality.py), which flags fewer right labels.
FLAGGED_BELOW = 0.5
MIN_WEIGHT = 0.05


def handle_noise(rows: list[dict], handling: str) -> tuple[list[dict], list[float] | None, dict]:
    """The rows to train on, their weights (None: all equal) and what was done, for the manifest."""
    if handling not in NOISE_HANDLING:
        raise TrainingError(f"Unknown noise handling {handling!r}; one of {', '.join(NOISE_HANDLING)}.")
    report: dict = {"noise_handling": handling}
    if "prune" in handling:
        unreviewed = [r for r in rows if r["state"] != "reviewed"]
        scored = [r for r in unreviewed if r["quality"] is not None]
        flagged = {
            r["id"]
            for r in scored
            if (r["issue"] if r.get("issue") is not None else r["quality"] < FLAGGED_BELOW)
        }
        rows = [r for r in rows if r["id"] not in flagged]
        report.update(
            pruned=len(flagged),
            pruned_share=round(len(flagged) / len(unreviewed), 4) if unreviewed else 0.0,
            unscored=len(unreviewed) - len(scored),
        )
    weights = None
    if "weight" in handling:
        weights = [
            1.0
            if r["state"] == "reviewed" or r["confidence"] is None
            else max(MIN_WEIGHT, min(1.0, r["confidence"]))
            for r in rows
        ]
        report["mean_weight"] = round(sum(weights) / len(weights), 4) if weights else None
    return rows, weights, report


def split_validation(
    rows: list[dict], *, fraction: float, seed: int, stratum=None
) -> tuple[list[dict], list[dict]]:
    """A stratified validation split carved from the training rows (never from gold).

    `stratum(answer)` groups the rows (the task's ``stratum``: the label, or the set of
    fields a text holds); without it a row's answer is its own group.
    """
    if fraction <= 0:
        return rows, []
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        key = stratum(row["label"]) if stratum else row["label"]
        by_label.setdefault(key, []).append(row)
    train, validation = [], []
    for members in by_label.values():
        members = members[:]
        rng.shuffle(members)
        take = int(len(members) * fraction) if len(members) >= 5 else 0
        validation += members[:take]
        train += members[take:]
    return sorted(train, key=lambda r: r["id"]), sorted(validation, key=lambda r: r["id"])


def training_estimate(
    *,
    project: Project,
    label_source: str,
    teacher_min_confidence: float,
    include_synthetic: bool,
    epochs: float,
) -> dict:
    rows = training_set(
        project=project,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
    )
    per_label = project.task.category_counts([r["label"] for r in rows])
    speed, measured_on = measured_cpu_speed()
    if measured_on is not None:
        seconds = len(rows) * epochs / speed
        if measured_on.started_at and measured_on.finished_at:
            # What that run spent outside the trainer's loop (loading, saving, predicting).
            wall = (measured_on.finished_at - measured_on.started_at).total_seconds()
            seconds += max(0.0, wall - measured_on.train_seconds)
    else:
        max_length = default_hyperparameters().get("max_length", 64)
        tokens = sum(approx_tokens(r["text"], max_length) for r in rows)
        # The run then predicts every non-gold example, texts like the ones it trained on.
        predict_tokens = Example.objects.for_project(project).not_gold().count() * tokens / max(1, len(rows))
        seconds = (
            RUN_FIXED_SECONDS
            + tokens * epochs / CPU_TRAIN_TOKENS_PER_SECOND
            + predict_tokens / CPU_PREDICT_TOKENS_PER_SECOND
        )
    return {
        "examples": len(rows),
        "per_label": {name: n for name, n in per_label.items() if n},
        "labels_without_examples": sorted(
            set(project.labels.values_list("name", flat=True)) - {name for name, n in per_label.items() if n}
        ),
        "minutes_cpu": round(seconds / 60, 1),
        "examples_per_second": round(speed, 1),
        "speed_measured_on": (
            f"run {measured_on.number} of {measured_on.project.name}" if measured_on else None
        ),
    }
