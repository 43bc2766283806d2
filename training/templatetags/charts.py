"""The pages' charts: inline SVG, or the geometry their templates draw, and the sentences that read them.

Built here, in the template layer, from what the rows and services measured; no view or
service draws. The evaluation page's calibration and accuracy-vs-coverage charts (issue #24)
are whole SVGs with each point's numbers in words as its tooltip; the run page's loss curve,
the cost page's break-even and the learning curve of "where review pays" are coordinates
(``{% loss_chart run as c %}``) that their templates draw.
"""

from __future__ import annotations

import math

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()

# The plot area inside the SVG's viewBox (room for the axes' labels around it).
W, H = 300, 180
LEFT, TOP, RIGHT, BOTTOM = 44, 12, 16, 40


def _x(value: float) -> float:
    return round(LEFT + value * W, 1)


def _y(value: float) -> float:
    return round(TOP + (1 - value) * H, 1)


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def _frame(x_label: str, y_label: str) -> str:
    ticks = format_html_join(
        "",
        '<line x1="{0}" y1="{2}" x2="{1}" y2="{2}" class="grid"/>'
        '<text x="{3}" y="{2}" dy="4" text-anchor="end" class="tick">{4}</text>'
        '<text x="{5}" y="{6}" text-anchor="middle" class="tick">{4}</text>',
        ((_x(0), _x(1), _y(v), LEFT - 6, _pct(v), _x(v), TOP + H + 16) for v in (0, 0.25, 0.5, 0.75, 1)),
    )
    return format_html(
        '{}<line x1="{}" y1="{}" x2="{}" y2="{}" class="axis"/><line x1="{}" y1="{}" x2="{}" y2="{}" class="axis"/>'
        '<text x="{}" y="{}" text-anchor="middle" class="label">{}</text>'
        '<text transform="translate(12 {}) rotate(-90)" text-anchor="middle" class="label">{}</text>',
        ticks,
        _x(0),
        _y(0),
        _x(1),
        _y(0),
        _x(0),
        _y(0),
        _x(0),
        _y(1),
        _x(0.5),
        TOP + H + 34,
        x_label,
        _y(0.5),
        y_label,
    )


def _svg(kind: str, label: str, body: str) -> str:
    return format_html(
        '<svg class="chart" data-chart="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        kind,
        LEFT + W + RIGHT,
        TOP + H + BOTTOM,
        label,
        mark_safe(body),
    )


@register.simple_tag
def reliability_chart(bins, right_name: str = "accuracy", who: str = "student") -> str:
    """What the model says (its mean confidence per bin) against how often it is right there:
    on the diagonal a confidence can be read as a chance; below it, the model is over-sure."""
    rows = [b for b in bins or [] if b.get("count")]
    if not rows:
        return ""
    biggest = max(b["count"] for b in rows)
    points = []
    for b in rows:
        says, right, n = b["confidence"], b["accuracy"], b["count"]
        radius = 3 + 6 * (n / biggest) ** 0.5
        gap = "over" if right < says else "under"
        points.append(
            format_html(
                '<g data-bin="{}"><line x1="{}" y1="{}" x2="{}" y2="{}" class="gap {}"/>'
                '<circle cx="{}" cy="{}" r="{}" class="point"><title>{}</title></circle></g>',
                f"{b['low']:.1f}",
                _x(says),
                _y(says),
                _x(says),
                _y(right),
                gap,
                _x(says),
                _y(right),
                f"{radius:.1f}",
                f"When the {who} says about {_pct(says)} (confidence {b['low']:.1f}–{b['high']:.1f}), "
                f"it is right {_pct(right)} of the time: {n} gold item{'s' if n != 1 else ''}.",
            )
        )
    body = format_html(
        '{}<line x1="{}" y1="{}" x2="{}" y2="{}" class="diagonal"/>'
        '<text x="{}" y="{}" class="note" text-anchor="end">says = right</text>{}',
        _frame(f"what the {who} says (its confidence)", f"how often it is right ({right_name})"),
        _x(0),
        _y(0),
        _x(1),
        _y(1),
        _x(0.98),
        _y(0.98) + 14,
        mark_safe("".join(points)),
    )
    return _svg(
        "calibration", f"Calibration of the {who}: its confidence against how often it is right", body
    )


@register.simple_tag
def coverage_chart(coverage, target=None, threshold=None, right_name: str = "accuracy") -> str:
    """For each confidence threshold: the share of texts the student answers (coverage) and how
    often it is right on them, with the 95 % interval shaded, the target and the chosen threshold."""
    rows = [r for r in coverage or [] if r.get("answered")]
    if not rows:
        return ""
    rows.sort(key=lambda r: r["threshold"])
    answered = " ".join(f"{_x(r['threshold'])},{_y(r['coverage'])}" for r in rows)
    right = " ".join(f"{_x(r['threshold'])},{_y(r['accuracy'])}" for r in rows)
    band = [f"{_x(r['threshold'])},{_y(r['high'])}" for r in rows if r.get("high") is not None] + [
        f"{_x(r['threshold'])},{_y(r['low'])}" for r in reversed(rows) if r.get("low") is not None
    ]
    points = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="6" class="hit" data-threshold="{}"><title>{}</title></circle>',
        (
            (
                _x(r["threshold"]),
                _y(r["accuracy"]),
                r["threshold"],
                f"At confidence ≥ {r['threshold']:g} the student answers {_pct(r['coverage'])} of the texts "
                f"({r['answered']} gold items) and is right on {_pct(r['accuracy'])} of them"
                + (
                    f" (95 % interval {_pct(r['low'])}–{_pct(r['high'])})."
                    if r.get("low") is not None
                    else "."
                ),
            )
            for r in rows
        ),
    )
    extra = ""
    if target is not None:
        extra += format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="target"/><text x="{}" y="{}" class="note">target {}</text>',
            _x(0),
            _y(target),
            _x(1),
            _y(target),
            _x(0.02),
            _y(target) - 4,
            f"{target:g}",
        )
    if threshold is not None:
        extra += format_html(
            '<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" class="chosen"/><text x="{3}" y="{4}" class="note" '
            'text-anchor="end">recommended ≥ {5}</text>',
            _x(threshold),
            _y(0),
            _y(1),
            _x(threshold) - 4,
            _y(0.05),
            f"{threshold:g}",
        )
    body = format_html(
        '{}<polygon points="{}" class="band"/><polyline points="{}" class="covered"/>'
        '<polyline points="{}" class="right"/>{}{}',
        _frame("confidence threshold", f"share of texts · {right_name}"),
        " ".join(band),
        answered,
        right,
        mark_safe(extra),
        points,
    )
    return _svg("coverage", f"{right_name} and coverage by confidence threshold", body)


@register.simple_tag
def calibration_sentence(metrics: dict, who: str = "student") -> str:
    """The calibration error in words, with the confidence bin that holds the most gold items."""
    ece = metrics.get("ece")
    if ece is None:
        return ""
    rows = [b for b in metrics.get("reliability") or [] if b.get("count")]
    typical = max(rows, key=lambda b: b["count"]) if rows else None
    said = (
        f"When the {who} says about {_pct(typical['confidence'])}, it is right {_pct(typical['accuracy'])} "
        f"of the time ({typical['count']} gold items). "
        if typical
        else ""
    )
    return (
        f"{said}On average its confidence is {ece * 100:.0f} points away from how often it is right "
        f"(calibration error {ece:.3f}; 0 means a confidence can be read as a chance)."
    )


# --- the loss curve, the cost chart and the learning curve: coordinates their templates draw ---


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step for a chart axis (1, 2 or 5 times a power of ten), about `ticks` over span."""
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _money(value: float) -> str:
    if value >= 1_000_000:
        return f"${value / 1_000_000:g}M"
    if value >= 1000:
        return f"${value / 1000:g}k"
    return f"${value:g}" if value >= 1 or value == 0 else f"${value:.2g}"


@register.simple_tag
def cost_chart(report: dict, width: int = 640, height: int = 260) -> dict:
    """The cost chart's SVG coordinates: both curves, ticks on both axes, the break-even mark."""
    curve, break_even = report["curve"], report["break_even_month"]
    break_even_cost = report["break_even_cost"]
    peak = max([0.01] + [max(row["model"], row["api"]) for row in curve])
    step = nice_step(peak)
    top = math.ceil(peak / step - 1e-9) * step
    last = curve[-1]["month"] or 1

    def x(month: float) -> float:
        return round(month / last * width, 1)

    def y(value: float) -> float:
        return round(height - value / top * height, 1)

    def points(key: str) -> str:
        return " ".join(f"{x(row['month'])},{y(row[key])}" for row in curve)

    month_step = next(m for m in (1, 2, 3, 6, 12, 24) if last / m <= 12)
    mark = None
    if break_even is not None and break_even <= last:
        mark = {
            "x": x(break_even),
            "y": y(break_even_cost or 0),
            "label": f"break-even: month {break_even:.1f}",
            # The label sits on the side of the line with room for it.
            "anchor": "start" if break_even < last * 0.6 else "end",
            "label_x": x(break_even) + (8 if break_even < last * 0.6 else -8),
        }
    return {
        "model": points("model"),
        "api": points("api"),
        "top": top,
        "width": width,
        "height": height,
        "months": last,
        "y_ticks": [{"y": y(i * step), "label": _money(i * step)} for i in range(round(top / step) + 1)],
        "x_ticks": [{"x": x(m), "label": str(m)} for m in range(0, last + 1, month_step)],
        "break_even": mark,
    }


@register.simple_tag
def loss_chart(run, width: int = 600, height: int = 160) -> dict | None:
    """The loss curve's SVG coordinates, with value ticks on both axes (None before two points)."""
    history = run.loss_history or []
    if len(history) < 2:
        return None
    steps = [s for s, _ in history]
    losses = [loss for _, loss in history]
    low = min(0.0, min(losses))
    loss_step = nice_step((max(losses) - low) or 1.0, ticks=4)
    top = low + math.ceil((max(losses) - low) / loss_step - 1e-9) * loss_step
    span_x = max(1, run.total_steps or steps[-1])
    step_step = max(1, math.ceil(nice_step(span_x, ticks=5)))

    def y(loss: float) -> float:
        return round(height - (loss - low) / ((top - low) or 1.0) * height, 1)

    return {
        "points": " ".join(f"{s / span_x * width:.1f},{y(loss)}" for s, loss in history),
        "width": width,
        "height": height,
        "mid_y": height / 2,
        "y_ticks": [
            {"y": y(low + i * loss_step), "label": f"{low + i * loss_step:g}"}
            for i in range(round((top - low) / loss_step) + 1)
        ],
        "x_ticks": [
            {"x": round(s / span_x * width, 1), "label": f"{s:,}"} for s in range(0, span_x + 1, step_step)
        ],
    }


SERIES_COLORS = {"quick": "#2f6fec", "finetune": "#1f8a4c", "ensemble": "#c0392b"}


@register.simple_tag
def curve_chart(curve: list[dict], width: int = 600, height: int = 200) -> dict | None:
    """SVG geometry of the learning curve: one polyline per run kind, x = reviewed labels.

    The x axis starts at 0 reviewed labels, so a single run (or runs at one count) shows
    where it stands on the way from none, not on the y axis of a one-value range."""
    if not curve:
        return None
    x_max = max(p["reviewed"] for p in curve)
    lo_y = min(p["score"] for p in curve)
    hi_y = max(p["score"] for p in curve)
    span_x = x_max or 1
    lo_y, hi_y = max(0.0, lo_y - 0.05), min(1.0, hi_y + 0.05)
    span_y = hi_y - lo_y or 1

    def x(value: float) -> float:
        return round(value / span_x * width, 1)

    def y(value: float) -> float:
        return round(height - (value - lo_y) / span_y * height, 1)

    series = {}
    for point in curve:
        series.setdefault(point["kind"], []).append(point)
    return {
        "width": width,
        "height": height,
        "series": [
            {
                "kind": kind,
                "color": SERIES_COLORS.get(kind, "#667085"),
                "points": " ".join(f"{x(p['reviewed'])},{y(p['score'])}" for p in points),
                "dots": [{"x": x(p["reviewed"]), "y": y(p["score"]), **p} for p in points],
            }
            for kind, points in series.items()
        ],
        "x_min": 0,
        "x_max": x_max,
        "y_min": round(lo_y, 2),
        "y_max": round(hi_y, 2),
    }
