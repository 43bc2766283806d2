from __future__ import annotations

import markdown as md
import nh3
from django import template
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
