from __future__ import annotations

import markdown as md
import nh3
from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()

_ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "b",
    "i",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}


@register.filter
def markdown_safe(text: str) -> str:
    """Markdown rendered to HTML, then sanitised: guidelines are user input."""
    html = md.markdown(text or "", extensions=["tables", "fenced_code", "sane_lists"])
    return mark_safe(nh3.clean(html, tags=_ALLOWED_TAGS, link_rel="noopener noreferrer"))


@register.filter
def percent(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


@register.simple_tag
def task_review_context(task, text: str, value) -> dict:
    """What the task adds to a review card for this text and answer (tasks.base.Task.review_context)."""
    return task.review_context(text or "", value)


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template (None when missing)."""
    return mapping.get(key) if hasattr(mapping, "get") else None


# --- numbers in words (issue #24: every number a reviewer or lead sees says what it means) ---------

# Landis and Koch's bands for Cohen's kappa, the usual reading of an agreement figure.
_KAPPA_WORDS = (
    (0.8, "almost perfect"),
    (0.6, "substantial"),
    (0.4, "moderate"),
    (0.2, "fair"),
    (0.0, "slight"),
)


@register.filter
def kappa_words(kappa) -> str:
    """How strong an agreement κ is, in words: "substantial agreement"."""
    if not isinstance(kappa, (int, float)):
        return "not measured yet"
    for floor, words in _KAPPA_WORDS:
        if kappa > floor:
            return f"{words} agreement"
    return "no more agreement than chance"


@register.filter
def pct(value, digits: int = 0) -> str:
    """A share 0-1 as a percentage: 0.523 -> "52 %"."""
    try:
        return f"{float(value) * 100:.{int(digits)}f} %"
    except (TypeError, ValueError):  # None, or a metric this evaluation does not have ("")
        return "—"


_CONFIDENCE_METHODS = {
    "logprobs": "from the probability of its answer's tokens",
    "self_consistency": "from how often its repeated answers agree",
    "softmax": "from its probabilities over the labels",
    "dictionary": "from how often the values it found were marked before",
}


@register.simple_tag
def confidence(value, who: str = "teacher", method: str = "") -> str:
    """A model's confidence on a review card: "31 % sure", with what that means as its tooltip."""
    if not isinstance(value, (int, float)):
        return ""
    share = round(float(value) * 100)
    how = _CONFIDENCE_METHODS.get(method or "", "")
    title = (
        f"The {who} says it is {share} % sure of this answer{f' ({how})' if how else ''}. It is the "
        f"model's own estimate, not how often it is right: the audit (Overview) and the gold "
        f"evaluation measure that."
    )
    return format_html(
        '<span class="conf" title="{}" data-confidence="{}">{} % sure</span>', title, f"{value:.2f}", share
    )


@register.filter
def duration(seconds) -> str:
    """Seconds as people say them: "17 s", "4 min", "1 h 20 min"."""
    if not isinstance(seconds, (int, float)):
        return "—"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
