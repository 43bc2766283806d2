"""Where review pays: what the project got for its reviews, and what the next batch may bring.

All from what has been measured in this project, nothing modelled:

- the learning curve: each evaluated run's gold score against the number of reviewed
  labels it trained on (per run kind);
- teacher errors found per 100 reviews in each queue order (a verdict other than accept
  on a card with a teacher proposal is an error found; an example counts once, by its
  latest verdict), by kind in the task's terms, with the random audit draws as the baseline
  an order has to beat;
- the teacher's score in the task's metric on those audit cards (the reviewers' answers as
  the truth);
- what the last label-quality run flags among unreviewed labels (what pruning leaves out)
  as a share of the teacher errors the audit estimates there, and so which order the
  default ("auto") queue serves;
- the next batch's estimated gain: the slope between the two latest evaluated runs of one
  kind whose reviewed counts differ, times the batch, labelled as an extrapolation;
- review time (each verdict's seconds on the card, capped at 10 minutes: longer is a
  break) and its cost at the lead's hourly rate, beside the teacher's API spend.
"""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from annotation.models import STUDENT_AGENT_PREFIX, Project, Proposal, Review
from annotation.review.rounds import review_time
from tasks.stats import wilson_interval
from training.models import Evaluation, ServingConfig

BATCH = 100


def learning_curve(project: Project) -> list[dict]:
    """Gold score of every evaluated run against the reviewed labels it trained on, by reviewed count."""
    points = {}
    for evaluation in (
        Evaluation.objects.filter(project=project, subject=Evaluation.Subject.STUDENT, run__isnull=False)
        .select_related("run", "gold_set")
        .order_by("created_at", "pk")
    ):
        score = evaluation.metrics.get("score")
        if score is None:
            continue
        run = evaluation.run
        points[run.pk] = {  # the run's latest evaluation counts
            "run": run.number,
            "kind": run.kind,
            "reviewed": int(run.counts.get("reviewed") or 0),
            "train": run.train_count,
            "score": score,
            "gold_version": evaluation.gold_set.version,
        }
    return sorted(points.values(), key=lambda p: (p["reviewed"], p["run"]))


def next_batch_gain(curve: list[dict], batch: int = BATCH) -> dict | None:
    """Score points per `batch` more reviews, from the two latest runs of one kind with different counts."""
    by_kind: dict[str, list[dict]] = {}
    for point in sorted(curve, key=lambda p: p["run"]):
        by_kind.setdefault(point["kind"], []).append(point)
    best = None
    for kind, points in by_kind.items():
        latest = points[-1]
        earlier = [p for p in points[:-1] if p["reviewed"] != latest["reviewed"]]
        if not earlier:
            continue
        previous = earlier[-1]
        slope = (latest["score"] - previous["score"]) / (latest["reviewed"] - previous["reviewed"])
        candidate = {
            "kind": kind,
            "from_run": previous["run"],
            "to_run": latest["run"],
            "points_per_batch": round(100 * slope * batch, 2),
            "batch": batch,
        }
        if best is None or latest["run"] > best["to_run"]:
            best = candidate
    return best


def _judged_reviews(project: Project):
    """(verdict, order, is audit, proposed answer, reviewer's answer, text) of every queue
    verdict on a teacher proposal."""
    return (
        Review.objects.filter(
            example__project=project, kind=Review.Kind.REVIEW, proposal__isnull=False, is_bulk=False
        )
        .latest_per_example()
        .order_by()
        .values_list("verdict", "queue_order", "is_audit", "proposal__value", "value", "example__text")
    )


def errors_found_by_order(project: Project) -> list[dict]:
    """Teacher errors found per 100 reviews in each queue order; "random" is the unbiased baseline.

    An error found is a verdict other than accept; ``kinds`` counts what the reviewers' answers
    show wrong in the proposals, in the task's terms (``Task.error_kinds``: for spans, the
    missed, boundary, wrong-field and spurious ones), and ``kinds_per_100`` per 100 reviews."""
    from annotation.review import STRATEGIES

    task = project.task
    rows: dict[str, list[bool]] = {}
    kinds: dict[str, dict[str, int]] = {}
    for verdict, order, audit, proposed, final, text in _judged_reviews(project):
        key = "random" if audit else (order or "unknown")
        rows.setdefault(key, []).append(verdict != Review.Verdict.ACCEPT)
        counts = kinds.setdefault(key, dict.fromkeys(task.error_kind_names, 0))
        if verdict != Review.Verdict.ACCEPT and proposed is not None:
            try:
                found = task.error_kinds(
                    proposed, None if verdict == Review.Verdict.REJECT else final, text=text
                )
            except (TypeError, KeyError, AttributeError):
                continue  # an answer of another shape (the task type changed since)
            for kind, n in found.items():
                counts[kind] = counts.get(kind, 0) + n
    names = {**STRATEGIES, "similar": "More like this", "unknown": "Before orders were recorded"}
    out = []
    for order, found in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        interval = wilson_interval(sum(found), len(found))
        out.append(
            {
                "order": order,
                "name": names.get(order, order),
                "reviews": len(found),
                "errors": sum(found),
                "per_100": round(100 * sum(found) / len(found), 1),
                "low": round(100 * interval[0], 1) if interval else None,
                "high": round(100 * interval[1], 1) if interval else None,
                "kinds": kinds[order],
                "kinds_per_100": {k: round(100 * n / len(found), 1) for k, n in kinds[order].items()},
            }
        )
    return out


def teacher_on_audit(project: Project) -> dict | None:
    """The teacher's score in the task's metric on the random audit cards, the reviewers'
    answers taken as the truth (rejected cards left out): an unbiased estimate of how good the
    unreviewed teacher labels are that training would use, in the same metric as gold."""
    from annotation.review.audit import MIN_AUDIT

    pairs = [
        (proposed, final, text)
        for verdict, _, audit, proposed, final, text in _judged_reviews(project)
        if audit and verdict != Review.Verdict.REJECT and proposed is not None and final is not None
    ]
    if not pairs:
        return None
    task = project.task
    try:
        metrics = task.metrics(
            [f for _, f, _ in pairs], [p for p, _, _ in pairs], texts=[t for _, _, t in pairs]
        )
    except (TypeError, KeyError, AttributeError, ValueError):
        return None
    return {"n": len(pairs), "score": metrics.get("score"), "enough": len(pairs) >= MIN_AUDIT}


def pruning_cover(project: Project) -> dict | None:
    """What the last label-quality run flags among unreviewed labels, the share of the audit's
    estimated teacher errors that is, and the order the project's "auto" queue serves for it."""
    from annotation.review import latest_quality_run
    from annotation.review.next_card import KEPT_FROM_COVERAGE, STRATEGIES, auto_strategy

    run = latest_quality_run(project)
    if run is None or run.flagged is None:
        return None
    serves = auto_strategy(run.flag_coverage, project.task.auto_order)
    return {
        "flagged": run.flagged,
        "coverage": run.flag_coverage,
        "threshold": KEPT_FROM_COVERAGE,
        "serves": serves,
        "serves_name": STRATEGIES[serves],
    }


def review_cost(project: Project, rate: Decimal) -> dict:
    time = review_time(project)
    hours = time["seconds"] / 3600
    per_item = time["seconds_per_item"]
    api = Proposal.objects.filter(example__project=project).exclude(
        agent__startswith=STUDENT_AGENT_PREFIX
    ).aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)
    return {
        "reviews": time["cards"],
        "timed": time["timed"],
        "hours": round(hours, 2),
        "seconds_per_item": round(per_item, 1) if per_item is not None else None,
        "rate": rate,
        "cost_usd": (Decimal(str(round(hours, 4))) * rate).quantize(Decimal("0.01")),
        "next_batch_usd": (
            (Decimal(str(per_item)) * BATCH / 3600 * rate).quantize(Decimal("0.01")) if per_item else None
        ),
        "api_usd": Decimal(api).quantize(Decimal("0.01")),
    }


def review_value(project: Project) -> dict:
    config = ServingConfig.objects.filter(project=project).first()
    rate = (
        config.review_usd_per_hour if config else ServingConfig._meta.get_field("review_usd_per_hour").default
    )
    curve = learning_curve(project)
    return {
        "curve": curve,
        "gain": next_batch_gain(curve),
        "orders": errors_found_by_order(project),
        "error_kinds": project.task.error_kind_names,
        "teacher_on_audit": teacher_on_audit(project),
        "pruning": pruning_cover(project),
        "cost": review_cost(project, Decimal(rate)),
        "batch": BATCH,
    }
