"""What to train on: the launch form's recommended label source, from what has been measured.

The teacher's accuracy comes from the frozen gold set when it was evaluated there, else from
the review queue's random audit share. The rules, in order:

1. No unbiased measure of the teacher yet: all current labels, flagged ones pruned; say the
   measure is missing.
2. The teacher measured worse than a student on reviewed labels alone (the upper end of its
   interval below that student's gold score), or weak (below ``WEAK_TEACHER``): reviewed
   labels only, plus the teacher's above the confidence where the audit shows them right
   (``TRUSTED_ACCURACY``), if there is one. Warn.
3. Otherwise: all current labels, flagged ones pruned. Never weighted by the teacher's
   confidence on top: it cost accuracy wherever it was measured (bench/README.md, section
   "Review budget").
"""

from __future__ import annotations

from annotation.models import Example, Project
from annotation.review.audit import WEAK_TEACHER, teacher_estimate, trusted_confidence
from tasks.stats import wilson_interval
from training.models import Evaluation, TrainingRun

STRONG_TEACHER = 0.85
TRUSTED_ACCURACY = 0.9

# The advice's words for each noise handling a task may advise (Task.advised_noise_handling).
HOW_NOISE = {
    "prune": ", leaving out the ones the label-quality scores flag.",
    "mask": ", leaving out of the loss the parts of them the label-quality scores flag.",
    "prune+mask": ", leaving out the ones the label-quality scores flag, and the parts of the rest they flag "
    "out of the loss.",
    "weight": ", weighting the unreviewed ones by the teacher's confidence.",
    "prune+weight": ", leaving out the ones the label-quality scores flag and weighting the rest by confidence.",
}


def _teacher_on_gold(project: Project) -> dict | None:
    evaluation = (
        Evaluation.objects.filter(project=project, subject=Evaluation.Subject.TEACHER)
        .order_by("-created_at", "-pk")
        .first()
    )
    if evaluation is None or evaluation.metrics.get("score") is None:
        return None
    n = evaluation.metrics.get("examples") or 0
    score = evaluation.metrics["score"]
    interval = wilson_interval(score * n, n) if n else None
    return {
        "accuracy": score,
        "n": n,
        "low": interval[0] if interval else None,
        "high": interval[1] if interval else None,
        "source": f"gold v{evaluation.gold_set.version} ({evaluation.agent})",
    }


def _named(agents: dict[str, int]) -> str:
    """Which teacher an audit measured: one agent, or how many versions it mixes."""
    if len(agents) == 1:
        return f" ({next(iter(agents))})"
    if agents:
        return f" (over {len(agents)} teacher versions, mostly {next(iter(agents))})"
    return ""


def _reviewed_only_student(project: Project) -> dict | None:
    """The best gold score of a run trained on reviewed labels only."""
    best = None
    for evaluation in Evaluation.objects.filter(
        project=project,
        subject=Evaluation.Subject.STUDENT,
        run__label_source=TrainingRun.LabelSource.REVIEWED,
    ).select_related("run"):
        score = evaluation.metrics.get("score")
        if score is not None and (best is None or score > best["accuracy"]):
            best = {"accuracy": score, "run": evaluation.run.number, "kind": evaluation.run.kind}
    return best


# Label smoothing for fine-tunes that train on teacher labels. Measured on Banking77 with the
# simulated 81.6 % teacher, 10 % of the pool reviewed (confidence first) and pruning, the
# same training set retrained: 0.9055 on gold without, 0.9120 with 0.1, 0.9149 with 0.2,
# 0.9136 with 0.3; through the app with 0.2, six models over three review passes: 0.9097 to
# 0.9165, mean 0.9128 (bench/README.md, "Review budget").
TEACHER_LABEL_SMOOTHING = 0.2


def label_source_advice(project: Project) -> dict:
    """The recommended label source, teacher confidence floor, noise handling and (for tasks
    that handle label noise) fine-tunes' label smoothing, with the reason."""
    advice = _label_source_advice(project)
    if "label_smoothing" in project.task.default_hyperparameters("finetune"):
        # Only where unreviewed teacher labels would be trained on: human labels keep the
        # measured defaults (bench/banking77_distill.py).
        smooth = (
            advice["label_source"] != TrainingRun.LabelSource.REVIEWED
            and Example.objects.for_project(project)
            .not_gold()
            .filter(review_state="unreviewed")
            .exclude(teacher_label="")
            .exists()
        )
        advice["label_smoothing"] = TEACHER_LABEL_SMOOTHING if smooth else 0.0
        if smooth:
            advice["reason"] += (
                f" Fine-tunes smooth the labels ({TEACHER_LABEL_SMOOTHING}), so a wrong teacher label pulls less."
            )
    return advice


def recommended_run(
    project: Project, *, kind: str = TrainingRun.Kind.FINETUNE, advice: dict | None = None
) -> dict:
    """The settings the advice recommends for a run of `kind`, as ``run_create`` takes them:
    ``label_source``, ``teacher_min_confidence`` and ``hyperparameters`` (the noise handling,
    and label smoothing where the kind has it). The launch form starts from them, and the
    admin's action and a review round's refresh launch with them, so all three agree."""
    from training.services.runs import run_defaults

    advice = advice if advice is not None else label_source_advice(project)
    hyperparameters = {"noise_handling": advice["noise_handling"]}
    if "label_smoothing" in advice and "label_smoothing" in run_defaults(project.task, kind):
        hyperparameters["label_smoothing"] = advice["label_smoothing"]
    return {
        "label_source": advice["label_source"],
        "teacher_min_confidence": advice["teacher_min_confidence"],
        "hyperparameters": hyperparameters,
    }


def _teacher_labels_to_train_on(project: Project) -> int:
    """Non-gold examples whose current label is still the teacher's (nobody reviewed them)."""
    return (
        Example.objects.for_project(project)
        .not_gold()
        .filter(review_state="unreviewed")
        .exclude(teacher_label="")
        .count()
    )


def _label_source_advice(project: Project) -> dict:
    unreviewed = _teacher_labels_to_train_on(project)
    people = Example.objects.for_project(project).not_gold().filter(review_state="reviewed").count()
    if people and not unreviewed:
        # Labels given or verified by people only (imported as verified, or every teacher label
        # reviewed): no teacher label would be trained on, so there is nothing to measure,
        # prune or weigh.
        return {
            "teacher": None,
            "audit": teacher_estimate(project),
            "reviewed": people,
            "reviewed_only_student": None,
            "warning": "",
            "teacher_min_confidence": 0.0,
            "label_source": TrainingRun.LabelSource.ALL_CURRENT,
            "noise_handling": "none",
            "reason": (
                "Every label a run would learn from was given or verified by people (no unreviewed "
                "teacher labels): all current labels, nothing left out."
            ),
        }
    audit = teacher_estimate(project)
    teacher = _teacher_on_gold(project)
    if teacher is None and audit["estimate"] is not None:
        teacher = {
            **audit["estimate"],
            "source": f"{audit['estimate']['n']} audit reviews of unreviewed examples"
            + _named(audit["agents"]),
        }
    reviewed = people
    student = _reviewed_only_student(project)
    # The task's measured noise handling (Task.advised_noise_handling), where it has any.
    prunes = project.task.handles_label_noise and project.task.advised_noise_handling != "none"
    prune = project.task.advised_noise_handling if prunes else "none"
    advice = {
        "teacher": teacher,
        "audit": audit,
        "reviewed": reviewed,
        "reviewed_only_student": student,
        "warning": "",
        "teacher_min_confidence": 0.0,
    }
    if teacher is None:
        return {
            **advice,
            "label_source": TrainingRun.LabelSource.ALL_CURRENT,
            "noise_handling": prune,
            "reason": (
                f"The teacher has not been measured without bias yet ({audit['audit']['n']} of "
                f"{audit['min_audit']} audit reviews; evaluating it on gold also measures it). Until then: all "
                "current labels" + (HOW_NOISE[prune] if prunes else ".")
            ),
        }
    accuracy, high = (
        teacher["accuracy"],
        teacher["high"] if teacher["high"] is not None else teacher["accuracy"],
    )
    beaten = student is not None and high < student["accuracy"]
    if beaten or high < WEAK_TEACHER:
        trusted = trusted_confidence(audit, target=TRUSTED_ACCURACY)
        why = (
            f"a student trained on reviewed labels alone (run {student['run']}) scored {student['accuracy']:.3f} on gold"
            if beaten
            else f"below {WEAK_TEACHER:.0%} even at the top of its interval"
        )
        warning = (
            f"The teacher is right on {accuracy:.0%} of {teacher['source']} "
            f"(95 % interval {teacher['low']:.0%}–{high:.0%}); {why}. Its {unreviewed:,} unreviewed "
            f"labels would drown the {reviewed:,} reviewed ones."
        )
        if not reviewed:
            return {
                **advice,
                "label_source": TrainingRun.LabelSource.ALL_CURRENT,
                "noise_handling": prune,
                "warning": (
                    f"The teacher is right on {accuracy:.0%} of {teacher['source']} "
                    f"(95 % interval {teacher['low']:.0%}–{high:.0%}); {why}. No label is reviewed yet, "
                    "so a student can only learn the teacher's answers, mistakes included: review some "
                    "first (the queue serves the likely errors first)."
                ),
                "reason": "All current labels (the teacher's): there are no reviewed ones to train on instead.",
            }
        if trusted is not None:
            return {
                **advice,
                "label_source": TrainingRun.LabelSource.REVIEWED_PLUS_TEACHER,
                "teacher_min_confidence": trusted["min_confidence"],
                "noise_handling": prune,
                "warning": warning,
                "reason": (
                    f"Reviewed labels, plus the teacher's at confidence ≥ {trusted['min_confidence']}, where the "
                    f"audit shows it right on {trusted['accuracy']:.0%} of {trusted['n']} (at least "
                    f"{trusted['low']:.0%})."
                ),
            }
        return {
            **advice,
            "label_source": TrainingRun.LabelSource.REVIEWED,
            "noise_handling": "none",
            "warning": warning,
            "reason": "Reviewed labels only: no teacher confidence is measured to be right often enough.",
        }
    gap = audit["confidence_gap"]
    confidence_note = (
        ""
        if gap is None or accuracy >= STRONG_TEACHER
        else (
            " Its confidence is not weighted in (on the audit, its more confident half is right "
            f"{abs(gap) * 100:.0f} percentage points {'more' if gap >= 0 else 'less'} often than the other "
            "half): on Banking77, weighting on top of pruning cost accuracy."
        )
    )
    return {
        **advice,
        "label_source": TrainingRun.LabelSource.ALL_CURRENT,
        "noise_handling": prune,
        "reason": (
            f"The teacher is right on {accuracy:.0%} of {teacher['source']}: all current labels"
            + (f"{HOW_NOISE[prune]}{confidence_note}" if prunes else ".")
        ),
    }
