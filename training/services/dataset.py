"""The training set: which examples and labels a student learns from, the validation split, the estimate."""

from __future__ import annotations

import random

from django.db.models import Q

from annotation.models import Example, Project
from tasks import AnswerError
from training.models import TrainingRun, default_hyperparameters

# The rough guess, used only until this installation has finished a run of the same kind
# (task type, run kind, base model). Measured on the shared 2-core sandbox (150 demo
# tickets, MiniLM-L6, max_length 64): a fine-tune's trainer did about 200 tokens x epochs
# a second; a run also spends a fixed ~15 s importing torch, loading the model, validating
# and saving, then predicts every non-gold example (forward only, ~3x the training rate).
# A quick run embeds each text once (forward only) and fits a small head. Per run kind:
# (fixed seconds, training tokens x epochs per second or None for one forward pass,
# prediction tokens per second). bench/README.md, "Training time estimates".
ROUGH_GUESS = {
    "finetune": (15.0, 200.0, 600.0),
    "quick": (10.0, None, 600.0),
}
# Runs of the same kind whose measured time calibrates the estimate (the newest first).
MEASURED_RUNS = 5


def approx_tokens(text: str, max_length: int) -> float:
    """MiniLM's word pieces for English, within a few percent on the demo and Banking77:
    about four characters a token, plus [CLS] and [SEP]."""
    return min(max_length, len(text) / 4 + 2)


def modelled_seconds(*, kind: str, train_tokens: float, predict_tokens: float, epochs: float) -> float:
    """The rough guess of a whole run's seconds from the sizes at hand (ROUGH_GUESS)."""
    fixed, train_rate, predict_rate = ROUGH_GUESS.get(kind, ROUGH_GUESS["finetune"])
    training = train_tokens * epochs / train_rate if train_rate else 0.0
    return fixed + training + predict_tokens / predict_rate


def measured_runs(*, task_type: str, kind: str, base_model: str) -> list[tuple[TrainingRun, float]]:
    """Finished runs of this kind (task type, run kind, base model) with their measured time
    over the rough guess made for them: (run, ratio), the newest first. A run of another task
    type or kind says nothing about this one (a quick run is ~100x faster than a fine-tune)."""
    found = []
    for run in TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED,
        kind=kind,
        base_model=base_model,
        project__task_type=task_type,
        started_at__isnull=False,
        finished_at__isnull=False,
        counts__estimate__has_key="modelled_seconds",
    ).order_by("-finished_at", "-pk")[:MEASURED_RUNS]:
        modelled = run.counts["estimate"]["modelled_seconds"]
        wall = (run.finished_at - run.started_at).total_seconds()
        if modelled and wall > 0:
            found.append((run, wall / modelled))
    return found


def duration_words(seconds: float) -> str:
    if seconds < 60:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min".replace(".0 ", " ")
    return f"{minutes / 60:.1f} h"


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
    for pk, text, label, state, digest, source, confidence, quality, issue, flags in examples.order_by(
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
        "label_flags",
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
                "flags": flags,
            }
        )
    return rows


# Noise handling of unreviewed labels (the launch form's choice, kept in the run's
# hyperparameters as "noise_handling"); reviewed labels are always kept at full weight.
NOISE_HANDLING = {
    "none": "None: every label counts the same",
    "prune": "Leave out unreviewed labels flagged as likely wrong",
    "mask": "Keep them, but leave their flagged parts out of the loss (the rest still teaches)",
    "prune+mask": "Leave out the flagged ones, and the flagged parts of the rest out of the loss",
    "weight": "Weight unreviewed labels by the teacher's confidence",
    "prune+weight": "Leave out the flagged ones and weight the rest by confidence",
}
# Where the quality run did not decide (``Example.label_issue`` null: a task type that only
# scores), a label is flagged when cleanlab's normalized margin is below 0.5: another label is
# more likely than the given one (out of sample). Classification decides with cleanlab's
# find_label_issues (tasks/classification/label_quality.py), which flags fewer right labels.
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
    if "mask" in handling:
        # Each row's flagged parts, in the task's shape, for the student's ``train(ignore=...)``.
        rows = [
            {**r, "ignore": r["flags"]} if r["state"] != "reviewed" and r.get("flags") else r for r in rows
        ]
        masked = [r for r in rows if r.get("ignore")]
        unreviewed = sum(r["state"] != "reviewed" for r in rows)
        report.update(
            masked=len(masked),
            masked_share=round(len(masked) / unreviewed, 4) if unreviewed else 0.0,
            masked_parts=sum(len(r["ignore"]) for r in masked),
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
    kind: str = TrainingRun.Kind.FINETUNE,
    base_model: str = "",
    max_length: int | None = None,
) -> dict:
    """The training set's size and how long a run of this kind would take on it (``time_estimate``)."""
    rows = training_set(
        project=project,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
    )
    per_label = project.task.category_counts([r["label"] for r in rows])
    return {
        "examples": len(rows),
        "per_label": {name: n for name, n in per_label.items() if n},
        "labels_without_examples": sorted(
            set(project.labels.values_list("name", flat=True)) - {name for name, n in per_label.items() if n}
        ),
        **time_estimate(
            project=project, rows=rows, kind=kind, base_model=base_model, epochs=epochs, max_length=max_length
        ),
    }


def time_estimate(
    *, project: Project, rows: list[dict], kind: str, base_model: str, epochs: float, max_length: int | None
) -> dict:
    """How long a run of this kind takes on these rows: the rough guess for these texts (their
    lengths, how many, the epochs), scaled by how far off that guess was on the last runs of
    the same kind here; ``about`` says it in words, with how sure it is."""
    max_length = max_length or default_hyperparameters().get("max_length", 64)
    train_tokens = sum(approx_tokens(r["text"], max_length) for r in rows)
    # The run then predicts every non-gold example, texts like the ones it trained on.
    predict_tokens = (
        Example.objects.for_project(project).not_gold().count() * train_tokens / max(1, len(rows))
    )
    modelled = modelled_seconds(
        kind=kind, train_tokens=train_tokens, predict_tokens=predict_tokens, epochs=epochs
    )
    measured = measured_runs(task_type=project.task_type, kind=kind, base_model=base_model)
    if measured:
        ratios = sorted(ratio for _, ratio in measured)
        seconds = modelled * ratios[len(ratios) // 2]
        n = len(measured)
        about = (
            f"about {duration_words(seconds)}, from {'the one earlier run' if n == 1 else f'{n} earlier runs'} "
            "of this kind here"
        )
        low, high = duration_words(modelled * ratios[0]), duration_words(modelled * ratios[-1])
        if n > 1 and low != high:
            about += f" (scaled to these texts they would have taken {low} to {high})"
    else:
        seconds = modelled
        about = (
            f"about {duration_words(seconds)}: no earlier run of this kind here, so a rough guess "
            "from a typical 2-core CPU (a GPU or a faster CPU is quicker, a larger base model slower)"
        )
    return {
        "kind": kind,
        "minutes": round(seconds / 60, 1),
        "modelled_seconds": round(modelled, 1),
        "measured_runs": [f"run {run.number} of {run.project.name}" for run, _ in measured],
        "sure": "measured" if measured else "rough",
        "about": about,
    }
