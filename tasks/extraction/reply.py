"""Where the parts of a teacher's JSON reply lie in its text: the entities' ends, for reading the
log-probs of each entity's own tokens (``ExtractionTask.logprob_answer``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from tasks.base import Category, json_answer
from tasks.extraction.spans import AnswerError, locate

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def reply_layout(content: str) -> tuple[list[int], int] | None:
    """Where each entity of a reply ends (just after the closing quote of its last string)
    and where its list ends (just after the "]"), as offsets into the reply; None when the
    reply is not an entities list (json_answer reads more: it is then not worth guessing)."""
    starts = [i for i in (content.find("{"), content.find("[")) if i >= 0]
    if not starts:
        return None
    try:
        root = located_json(content, min(starts))
    except (ValueError, IndexError):
        return None
    entities = root.parts.get("entities") if isinstance(root.parts, dict) else root
    if entities is None or not isinstance(entities.parts, list):
        return None
    ends = []
    for entity in entities.parts:
        strings = (
            [part.end for part in (entity.parts or {}).values()] if isinstance(entity.parts, dict) else []
        )
        ends.append(max(strings, default=entity.end))
    return ends, entities.end


class At:
    """A JSON value's place in a string: [start, end), and its located parts (dict or list)."""

    __slots__ = ("start", "end", "parts")

    def __init__(self, start: int, end: int, parts: dict | list | None = None):
        self.start, self.end, self.parts = start, end, parts


def located_json(s: str, i: int) -> At:
    """The JSON value that starts at s[i] (after whitespace), with where each part lies."""
    i = _WHITESPACE.match(s, i).end()
    if s[i] in "{[":
        closing = "}" if s[i] == "{" else "]"
        parts: dict | list = {} if s[i] == "{" else []
        j = _WHITESPACE.match(s, i + 1).end()
        if s[j] == closing:
            return At(i, j + 1, parts)
        while True:
            if isinstance(parts, dict):
                key, j = _DECODER.raw_decode(s, j)
                j = _WHITESPACE.match(s, j).end()
                if not isinstance(key, str) or s[j] != ":":
                    raise ValueError("not an object")
                part = located_json(s, j + 1)
                parts[key] = part
            else:
                part = located_json(s, j)
                parts.append(part)
            j = _WHITESPACE.match(s, part.end).end()
            if s[j] == closing:
                return At(i, j + 1, parts)
            if s[j] != ",":
                raise ValueError("expected a comma")
            j = _WHITESPACE.match(s, j + 1).end()
    _, end = _DECODER.raw_decode(s, i)
    return At(i, end)


def located_entities(
    content: str | None,
    *,
    text: str,
    by_name: Mapping[str, Category],
    context: Mapping | None = None,
    rules: list[str] | None = None,
) -> tuple[list[tuple[int, dict]], str]:
    """``(index of the entity in the reply, its span)`` for each value the reply lists, in
    reply order (a single-valued field's value named twice is one span), or ([], why).
    A value the text holds more often than the reply names it is placed by ``locate``'s
    rule (`context`, `rules`)."""
    obj, error = json_answer(content)
    if error:
        return [], error
    entities = obj.get("entities") if isinstance(obj, dict) else obj
    if not isinstance(entities, list):
        return [], f'answer has no "entities" list: {content[:200]!r}'
    indexes, names, values = [], [], []
    for index, entity in enumerate(entities):
        if not isinstance(entity, dict):
            return [], f"entity {index + 1} is not an object"
        field, value = entity.get("field"), entity.get("text")
        if not isinstance(field, str) or field not in by_name:
            return [], f"entity {index + 1} names an unknown field {field!r}"
        if not isinstance(value, str) or not value.strip():
            return [], f"entity {index + 1} ({field}) has an empty text"
        if not by_name[field].allows_many and (field, value.strip()) in zip(names, values, strict=True):
            continue  # the same single value named twice is one value
        indexes.append(index)
        names.append(field)
        values.append(value.strip())
    try:
        places = locate(text, values, names, context=context, rules=rules)
    except AnswerError as exc:
        return [], str(exc)
    return [
        (index, {"start": s, "end": e, "field": f})
        for index, (s, e), f in zip(indexes, places, names, strict=True)
    ], ""
