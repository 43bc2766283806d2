"""How right is the teacher? Measured on the random audit share of the review queue.

A review queue ordered by risk (lowest confidence, disagreement, likely errors) shows the
teacher's worst answers first, so its accuracy on reviewed items is biased low; on a
queue filtered by label it is biased in any direction. The queue therefore serves a share
of its cards (``Project.audit_share``, 10 % by default) drawn at random from the whole
unreviewed pool, whatever the order; a card served in the random order is one too. The
verdicts on those cards (``Review.is_audit``) are a random sample of the teacher's answers
on the examples still unreviewed when each was drawn: their accuracy, with its Wilson
interval, estimates how right the teacher labels are that training would use (reviewed
examples train on the reviewer's label). It is not the teacher's accuracy on the whole
pool: a risk order takes the worst answers out of the unreviewed pool first, so the
remainder is better than the pool was (bench/README.md, section "Review budget"); gold
measures the whole. Accuracy per confidence floor (on the same audit sample) says above which
confidence the teacher's labels are measured to be right.
"""

from __future__ import annotations

from collections import Counter

from annotation.models import Project, Review
from tasks.stats import wilson_interval

# Audit verdicts needed before the estimate is shown as one (fewer: "n too small").
MIN_AUDIT = 20
# A teacher whose accuracy is below this even at the top of its interval is weak: the
# dashboard and the launch form warn, and training leans on reviewed labels.
WEAK_TEACHER = 0.6
CONFIDENCE_FLOORS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _summary(pairs: list[tuple[bool, float | None]]) -> dict:
    n = len(pairs)
    right = sum(ok for ok, _ in pairs)
    interval = wilson_interval(right, n)
    return {
        "n": n,
        "right": right,
        "accuracy": right / n if n else None,
        "low": interval[0] if interval else None,
        "high": interval[1] if interval else None,
    }


def teacher_estimate(project: Project) -> dict:
    """The teacher's accuracy on audit verdicts (unbiased) and on all verdicts (biased by the order).

    A verdict judges the teacher when the card had a teacher proposal: accept is right,
    correct and reject are wrong (a reject says no label fits, so the proposed one did not).
    ``estimate`` is the audit summary once it has ``MIN_AUDIT`` verdicts, else None.
    """
    rows = list(
        Review.objects.filter(example__project=project, kind=Review.Kind.REVIEW, proposal__isnull=False)
        .latest_per_example()  # an example is one draw, however many rows a replay left
        .order_by()
        .values_list("verdict", "is_audit", "proposal__confidence", "proposal__agent")
    )
    judged = [(verdict == Review.Verdict.ACCEPT, audit, conf) for verdict, audit, conf, _ in rows]
    # Which teacher the audit measured: a new prompt or model, or the offline teacher's grown
    # memory (its agent name carries both), is another teacher.
    agents = Counter(agent for _, is_audit, _, agent in rows if is_audit)
    audit = [(ok, conf) for ok, is_audit, conf in judged if is_audit]
    everything = [(ok, conf) for ok, _, conf in judged]
    by_confidence = []
    for floor in CONFIDENCE_FLOORS:
        above = [(ok, conf) for ok, conf in audit if conf is not None and conf >= floor]
        if above:
            by_confidence.append({"min_confidence": floor, **_summary(above)})
    audit_summary = _summary(audit)
    return {
        "confidence_gap": confidence_gap(audit),
        "audit": audit_summary,
        "all": _summary(everything),
        "estimate": audit_summary if audit_summary["n"] >= MIN_AUDIT else None,
        "agents": dict(agents.most_common()),
        "by_confidence": by_confidence,
        "audit_share": project.audit_share,
        "min_audit": MIN_AUDIT,
    }


# Audit verdicts with a confidence needed in each half before the gap is measured.
MIN_HALF = 10


def confidence_gap(audit: list[tuple[bool, float | None]]) -> float | None:
    """How much more often the teacher is right on its more confident half of the audit cards
    (accuracy above the median confidence minus below it); None with too few cards. A gap
    near 0 means its confidence says nothing about being right, so weighting by it only
    throws away good labels."""
    scored = sorted((conf, ok) for ok, conf in audit if conf is not None)
    half = len(scored) // 2
    if half < MIN_HALF:
        return None
    low, high = scored[:half], scored[-half:]
    return sum(ok for _, ok in high) / half - sum(ok for _, ok in low) / half


def trusted_confidence(estimate: dict, *, target: float) -> dict | None:
    """The lowest confidence floor above which the audit shows the teacher right at `target`
    with 95 % confidence (the interval's low end), or None if no floor does."""
    for row in estimate["by_confidence"]:
        if row["n"] >= MIN_AUDIT and row["low"] is not None and row["low"] >= target:
            return row
    return None
