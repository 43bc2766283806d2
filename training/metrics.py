"""Evaluation numbers from gold labels and predictions: scikit-learn does the counting."""

from __future__ import annotations

from collections import Counter

import numpy as np

SWEEP_THRESHOLDS = [round(t, 2) for t in np.arange(0.0, 1.0, 0.05)] + [0.97, 0.99]
LENGTH_BUCKETS = [(0, 50, "< 50 chars"), (50, 150, "50-149"), (150, 400, "150-399"), (400, 10**9, "400+")]


def classification_metrics(
    golds: list[str],
    preds: list[str | None],
    confidences: list[float | None],
    labels: list[str],
    *,
    target_accuracy: float = 0.95,
    bins: int = 10,
) -> dict:
    """Accuracy, per-class and averaged P/R/F1, confusion matrix, calibration, coverage sweep.

    A missing prediction (None) counts as wrong; confidence-based numbers use
    only the predictions that came with a confidence.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    n = len(golds)
    if n == 0:
        return {"examples": 0}
    # A gold label the project no longer has (renamed since) still counts.
    labels = list(labels) + sorted(set(golds) - set(labels))
    shown = [p if p is not None else "(none)" for p in preds]
    names = list(labels) + (["(none)"] if "(none)" in shown else [])
    precision, recall, f1, support = precision_recall_fscore_support(
        golds, shown, labels=labels, zero_division=0
    )
    averages = {}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            golds, shown, labels=labels, average=average, zero_division=0
        )
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    matrix = confusion_matrix(golds, shown, labels=names)
    confusions = Counter((g, p) for g, p in zip(golds, shown, strict=True) if g != p)
    metrics = {
        "examples": n,
        "accuracy": float(accuracy_score(golds, shown)),
        "per_class": [
            {
                "label": label,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        ],
        **{f"{k}_avg": v for k, v in averages.items()},
        "confusion": {"labels": names, "matrix": matrix.tolist()},
        "top_confusions": [
            {"true": g, "predicted": p, "count": c} for (g, p), c in confusions.most_common(25)
        ],
        "missing_predictions": sum(p is None for p in preds),
    }
    metrics.update(calibration(golds, preds, confidences, bins=bins, target_accuracy=target_accuracy))
    return metrics


def calibration(
    golds: list[str],
    preds: list[str | None],
    confidences: list[float | None],
    *,
    bins: int,
    target_accuracy: float,
) -> dict:
    pairs = [
        (c, g == p)
        for g, p, c in zip(golds, preds, confidences, strict=True)
        if c is not None and p is not None
    ]
    if not pairs:
        return {"with_confidence": 0, "ece": None, "reliability": [], "coverage": [], "threshold": None}
    conf = np.array([c for c, _ in pairs], dtype=float)
    right = np.array([r for _, r in pairs], dtype=float)
    reliability, ece = [], 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    for i in range(bins):
        low, high = edges[i], edges[i + 1]
        inside = (conf >= low) & ((conf < high) if i < bins - 1 else (conf <= high))
        count = int(inside.sum())
        if count:
            accuracy, mean_conf = float(right[inside].mean()), float(conf[inside].mean())
            ece += count / len(conf) * abs(accuracy - mean_conf)
        else:
            accuracy = mean_conf = None
        reliability.append(
            {
                "low": float(low),
                "high": float(high),
                "count": count,
                "accuracy": accuracy,
                "confidence": mean_conf,
            }
        )
    coverage = []
    for threshold in SWEEP_THRESHOLDS:
        kept = conf >= threshold
        count = int(kept.sum())
        coverage.append(
            {
                "threshold": threshold,
                "coverage": count / len(conf),
                "accuracy": float(right[kept].mean()) if count else None,
            }
        )
    # The lowest threshold (most coverage) whose answered share reaches the target.
    reaching = [row for row in coverage if row["accuracy"] is not None and row["accuracy"] >= target_accuracy]
    threshold = min(reaching, key=lambda row: row["threshold"]) if reaching else None
    return {
        "with_confidence": len(pairs),
        "ece": float(ece),
        "reliability": reliability,
        "coverage": coverage,
        "threshold": threshold,
        "target_accuracy": target_accuracy,
    }


def error_overlap(student: dict[int, bool], teacher: dict[int, bool]) -> dict[str, list[int]]:
    """Examples split by who got them right: the cells of the student-vs-teacher table.

    `student`/`teacher` map example id -> is the prediction right. Examples one
    side did not predict are left out.
    """
    cells: dict[str, list[int]] = {
        "both_right": [],
        "only_student_wrong": [],
        "only_teacher_wrong": [],
        "both_wrong": [],
    }
    for example_id in sorted(set(student) & set(teacher)):
        s, t = student[example_id], teacher[example_id]
        key = (
            "both_right"
            if s and t
            else "only_student_wrong"
            if t
            else "only_teacher_wrong"
            if s
            else "both_wrong"
        )
        cells[key].append(example_id)
    return cells


def errors_by(predictions: list[dict], key) -> list[dict]:
    """Error rate per group (e.g. per source or text-length bucket)."""
    groups: dict[str, list[bool]] = {}
    for row in predictions:
        groups.setdefault(key(row), []).append(row["gold"] == row["predicted"])
    return [
        {"group": name, "examples": len(v), "errors": len(v) - sum(v), "error_rate": 1 - sum(v) / len(v)}
        for name, v in groups.items()
    ]


def length_bucket(text_length: int) -> str:
    return next(name for low, high, name in LENGTH_BUCKETS if low <= text_length < high)
