"""The cost page: break-even inputs (measured or entered) and the report (its chart: templatetags/charts.py)."""

from __future__ import annotations

import math
from decimal import Decimal

from django.db.models import Avg, Sum
from django.utils import timezone

from annotation.models import STUDENT_AGENT_PREFIX, Project, Proposal
from training.models import PredictionLog
from training.serving.config import serving_config_for
from training.serving.monitor import LATENCY_SAMPLE, latency_summary
from training.serving.versions import active_version


def model_cost(
    month: float, *, D: Decimal, T: Decimal, H: Decimal, V: Decimal, f: Decimal, p: Decimal
) -> Decimal:
    return D + T + H * Decimal(str(month)) + V * f * p * Decimal(str(month))


def api_cost(month: float, *, V: Decimal, p: Decimal) -> Decimal:
    return V * p * Decimal(str(month))


def break_even_month(
    *, D: Decimal, T: Decimal, H: Decimal, V: Decimal, f: Decimal, p: Decimal
) -> float | None:
    """The month from which the model is cheaper: (D + T) / (V*p*(1-f) - H), or None if never."""
    monthly_saving = V * p * (1 - f) - H
    if monthly_saving <= 0:
        return None
    return float((D + T) / monthly_saving)


def cost_inputs(project: Project) -> dict:
    """Every input of the break-even, and whether the app measured it or a lead entered it."""
    config = serving_config_for(project)
    teacher = Proposal.objects.filter(example__project=project).exclude(
        agent__startswith=STUDENT_AGENT_PREFIX
    )
    data_cost = teacher.aggregate(s=Sum("cost_usd"))["s"] or Decimal("0")
    seconds = (
        project.training_runs.filter(train_seconds__isnull=False).aggregate(s=Sum("train_seconds"))["s"] or 0
    )
    training_cost = (Decimal(str(seconds)) / 3600 * config.compute_usd_per_hour).quantize(Decimal("0.0001"))
    paid = teacher.filter(cost_usd__gt=0)
    measured_price = paid.aggregate(a=Avg("cost_usd"))["a"]
    since = timezone.now() - timezone.timedelta(days=30)
    logs = PredictionLog.objects.filter(project=project, created_at__gte=since)
    calls = logs.count()
    fallback_calls = logs.exclude(route="student").count()
    version = active_version(project)
    if calls:
        f, f_source = Decimal(fallback_calls) / Decimal(calls), "measured from the last 30 days of traffic"
    elif version is not None:
        evaluation = version.run.evaluations.filter(subject="student").order_by("-created_at").first()
        covered = next(
            (
                row["coverage"]
                for row in (evaluation.metrics.get("coverage", []) if evaluation else [])
                if row["threshold"] >= version.threshold
            ),
            None,
        )
        f, f_source = (
            (Decimal(str(1 - covered)), "estimated from gold coverage at the threshold")
            if covered is not None
            else (Decimal("1"), "no traffic or evaluation yet")
        )
    else:
        f, f_source = Decimal("1"), "no model deployed"
    if config.monthly_volume:
        V, V_source = Decimal(config.monthly_volume), "entered"
    else:
        V, V_source = Decimal(calls) * Decimal(30) / Decimal(30), "measured: calls in the last 30 days"
    if config.api_price_per_call is not None:
        p, p_source = config.api_price_per_call, "entered"
    elif measured_price is not None:
        p, p_source = (
            Decimal(str(measured_price)).quantize(Decimal("0.000001")),
            f"measured: mean of {paid.count():,} teacher calls",
        )
    else:
        p, p_source = Decimal("0"), "unknown: no paid teacher call yet"
    # Medians and tails, not means: one slow LLM call would pull a mean far from what a
    # caller sees. Requests that loaded the model (cold starts) measure the load: left out.
    latency = {
        "student": latency_summary(
            logs.filter(route="student", is_cold_start=False)
            .order_by("-pk")
            .values_list("latency_ms", flat=True)[:LATENCY_SAMPLE]
        ),
        "teacher": latency_summary(
            paid.exclude(latency_ms__isnull=True)
            .order_by("-pk")
            .values_list("latency_ms", flat=True)[:LATENCY_SAMPLE]
        ),
    }
    return {
        "D": (data_cost, "measured: sum of teacher proposal costs"),
        "T": (
            training_cost,
            f"{seconds / 3600:.2f} h of measured training x entered ${config.compute_usd_per_hour}/h",
        ),
        "H": (config.hosting_usd_per_month, "entered"),
        "V": (V, V_source),
        "f": (f.quantize(Decimal("0.0001")), f_source),
        "p": (p, p_source),
        "latency": latency,
    }


# The chart spans at least this many months, more when the break-even comes later (up to the cap).
COST_CHART_MONTHS = 24
COST_CHART_MAX_MONTHS = 120


def cost_report(project: Project, *, months: int | None = None) -> dict:
    inputs = cost_inputs(project)
    values = {k: v[0] for k, v in inputs.items() if k != "latency"}
    even = break_even_month(**values)
    if months is None:
        # Long enough to show the break-even with some months after it.
        months = COST_CHART_MONTHS
        if even is not None and even * 1.25 > months:
            months = min(COST_CHART_MAX_MONTHS, math.ceil(even * 1.25 / 6) * 6)
    curve = [
        {
            "month": m,
            "model": float(model_cost(m, **values)),
            "api": float(api_cost(m, V=values["V"], p=values["p"])),
        }
        for m in range(months + 1)
    ]
    return {
        "inputs": inputs,
        "values": values,
        "missing": _missing(project, inputs),
        "curve": curve,
        "break_even_month": even,
        "break_even_cost": float(api_cost(even, V=values["V"], p=values["p"])) if even is not None else None,
    }


def _missing(project: Project, inputs: dict) -> list[dict]:
    """What the break-even still lacks, each with what to do: without it the curves compare
    nothing (no price per call makes the API look free, no traffic makes hosting the only cost)."""
    missing = []
    if active_version(project) is None:
        missing.append(
            {
                "key": "model",
                "what": "No model is deployed.",
                "do": "Promote an evaluated run on the Deploy page; the traffic it answers then measures "
                "the fallback rate f.",
            }
        )
    if not inputs["V"][0]:
        missing.append(
            {
                "key": "traffic",
                "what": "No traffic yet, so no calls per month (V).",
                "do": "Send texts to the prediction API, or enter the calls you expect per month on the "
                "Deploy page.",
            }
        )
    if not inputs["p"][0]:
        missing.append(
            {
                "key": "price",
                "what": "No price per API call (p): no paid teacher call has measured it.",
                "do": "Enter what one call to your LLM costs on the Deploy page, or label with a paid "
                "teacher.",
            }
        )
    return missing
