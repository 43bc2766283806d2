"""Monitoring: traffic per day and route, latency percentiles, confidences and label drift."""

from __future__ import annotations

from django.db.models import Count
from django.utils import timezone

from annotation.models import Project
from training.models import PredictionLog
from training.serving.versions import active_version

# Latency percentiles are computed from at most this many of the most recent calls.
LATENCY_SAMPLE = 200_000


def latency_summary(values) -> dict:
    """The median, 95th and 99th percentile and count of some latencies (None each when empty)."""
    import numpy as np

    values = np.asarray(list(values), dtype=float)
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    p50, p95, p99 = (float(v) for v in np.percentile(values, [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99, "n": len(values)}


def monitoring(project: Project, *, days: int = 30) -> dict:
    since = timezone.now() - timezone.timedelta(days=days)
    logs = PredictionLog.objects.filter(project=project, created_at__gte=since)
    total = logs.count()
    per_day = list(
        logs.extra(select={"day": "date(created_at)"}).values("day").order_by("day").annotate(n=Count("pk"))
    )
    routes = dict(logs.values_list("route").order_by().annotate(n=Count("pk")))
    latencies: dict[str, list[float]] = {}
    cold: list[float] = []
    confidences: list[float] = []
    recent = logs.order_by("-pk").values_list("route", "latency_ms", "confidence", "is_cold_start")
    for route, latency, confidence, is_cold_start in recent[:LATENCY_SAMPLE]:
        # A request that loaded the model measures the load, not the model: apart.
        (cold if is_cold_start else latencies.setdefault(route, [])).append(latency)
        if confidence is not None and route == "student":
            confidences.append(confidence)
    histogram = [0] * 10
    for c in confidences:
        histogram[min(9, int(c * 10))] += 1
    predicted = dict(
        logs.exclude(student_answer_summary="")
        .values_list("student_answer_summary")
        .order_by()
        .annotate(n=Count("pk"))
    )
    version = active_version(project)
    trained = (version.run.counts.get("per_label") if version else None) or {}
    # Drift compares categories: logged answers that are not one category name (an
    # extraction's "date ×1 · people ×1") have no place in it.
    names = set(project.task.names) | set(trained)
    predicted = {k: n for k, n in predicted.items() if k in names}
    labels = sorted(set(predicted) | set(trained))
    p_total, t_total = sum(predicted.values()) or 1, sum(trained.values()) or 1
    # Total variation distance between what the student predicts now and what it learned from.
    drift = (
        0.5 * sum(abs(predicted.get(k, 0) / p_total - trained.get(k, 0) / t_total) for k in labels)
        if predicted and trained
        else None
    )
    drift_warning = drift is not None and drift > DRIFT_WARNING
    return {
        "days": days,
        "total": total,
        "per_day": [{"day": str(row["day"]), "n": row["n"]} for row in per_day],
        "routes": routes,
        "student_share": routes.get("student", 0) / total if total else None,
        "latency": {route: latency_summary(v) for route, v in sorted(latencies.items())},
        "cold_starts": latency_summary(cold),
        "confidence_histogram": histogram,
        "distribution": [
            {
                "label": k,
                "predicted": predicted.get(k, 0) / p_total if predicted else 0,
                "trained": trained.get(k, 0) / t_total if trained else 0,
            }
            for k in labels
        ],
        "drift": drift,
        "drift_warning": drift_warning,
        "out_of_scope": _out_of_scope(version, logs) if drift_warning else None,
    }


# Live traffic clearing the threshold this much less often than gold texts did points at
# texts unlike any the student learnt from (out of scope): they get low confidences and the
# nearest category, which moves the predicted distribution too.
OUT_OF_SCOPE_GAP = 0.15


def _out_of_scope(version, logs) -> dict | None:
    """The share of recent texts with a student confidence at or above the live threshold,
    against the share of gold texts that cleared it, where live is markedly lower."""
    from training.models import Evaluation

    if version is None:
        return None
    evaluation = (
        Evaluation.objects.filter(run=version.run, subject=Evaluation.Subject.STUDENT)
        .order_by("-created_at", "-pk")
        .first()
    )
    rows = (
        [r for r in (evaluation.metrics.get("coverage") or []) if r["threshold"] <= version.threshold]
        if evaluation
        else []
    )
    if not rows:
        return None
    expected = max(rows, key=lambda r: r["threshold"])["coverage"]
    scored = logs.filter(version=version, confidence__isnull=False)
    n = scored.count()
    if not n:
        return None
    live = scored.filter(confidence__gte=version.threshold).count() / n
    if live > expected - OUT_OF_SCOPE_GAP:
        return None
    return {"live": live, "expected": expected, "n": n, "threshold": version.threshold}


DRIFT_WARNING = 0.2
