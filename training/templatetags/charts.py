"""The evaluation page's charts as inline SVG, and the sentences that read them (issue #24).

Calibration and accuracy-vs-coverage were long tables of bare numbers; a lead reads a
chart, with each point's numbers in words as its tooltip. Built here, in the template
layer, from the metrics the evaluation stored; no view or service draws.
"""

from __future__ import annotations

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
