"""A teacher's JSON reply read closely: where its parts lie (the entities' ends), the values it
names located in the text, and each span's confidence from the log-probs of its own tokens
or from the share of k samples that hold it (``ExtractionTask.logprob_answer`` and
``consistency_answer`` ask here)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from tasks.base import Category, json_answer
from tasks.extraction.spans import AnswerError, locate, span_key

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


def logprob_confidences(
    content: str, value, tokens: list[tuple[str, float]], *, text: str, by_name, context
) -> tuple[dict, float | None]:
    """Each span's confidence from the log-probs of its own stretch of the reply, and the
    text's as the least sure of those decisions (both ``None`` when the tokens do not spell
    the reply).

    The reply's tokens are cut into one stretch per listed entity and one for the list's
    end. An entity's stretch runs from the end of the one before to the closing quote of
    its last string (``, {"field": "people", "text": "4"``): the choice to list one more
    value at all, its field, its value and where the value stops. Its probability,
    exp(sum of the stretch's log-probs), is the span's confidence: a span is right only
    when all of these are. The punctuation inside it costs nothing under a JSON schema
    (log-prob ~0). The last stretch (``}]``) is the choice to list no more.

    A text's confidence is the MIN over its spans and the list's end, as the student's is
    the min over its token decisions: the least sure decision in the answer, so a text is
    as sure as its weakest value or its likeliest missed one, and a reply with no spans
    is as sure as its ``[]``. (The product of them all would be the whole reply's
    probability: it falls with every value listed, so texts with many values would
    always look unsure.) A token that spells the ends of two stretches (``"}]``) counts
    in the first.
    """
    if not tokens or "".join(token for token, _ in tokens) != content or value is None:
        return value, None
    layout = reply_layout(content)
    located, error = located_entities(content, text=text, by_name=by_name, context=context)
    if layout is None or error:
        return value, None
    entity_ends, list_end = layout
    boundaries = [*entity_ends, list_end]
    sums = [0.0] * len(boundaries)
    position, stretch = 0, 0
    for token, logprob in tokens:
        # A token belongs to the first stretch that ends after it starts.
        while stretch < len(boundaries) and boundaries[stretch] <= position:
            stretch += 1
        if stretch == len(boundaries):
            break  # the closing brace after the list: no choice left
        sums[stretch] += logprob
        position += len(token)
    probability = [max(0.0, min(1.0, math.exp(total))) for total in sums]
    if any(index >= len(entity_ends) for index, _ in located):
        return value, None
    by_span: dict[tuple[int, int, str], float] = {}
    for index, span in located:
        by_span.setdefault(span_key(span), probability[index])
    spans = [{**span, "confidence": by_span.get(span_key(span))} for span in value["spans"]]
    if any(span["confidence"] is None for span in spans):
        return value, None  # the reply does not spell this answer
    return {"spans": spans}, min([*(span["confidence"] for span in spans), probability[-1]])


def sample_confidences(value, samples: list) -> tuple[dict, float]:
    """Each span's confidence is the share of the k samples that hold it (an invalid sample
    holds none); the text's is the least of those and of the share of samples that hold
    no span beyond the answer's (the list's end), as for log-probs."""
    sets = [_keys(sample) if sample is not None else None for sample in samples]
    spans = [
        {**span, "confidence": sum(s is not None and span_key(span) in s for s in sets) / len(sets)}
        for span in value["spans"]
    ]
    own = _keys(value)
    ends = sum(s is not None and s <= own for s in sets) / len(sets)
    return {"spans": spans}, min([*(span["confidence"] for span in spans), ends])


def _keys(answer: Mapping | None) -> set[tuple[int, int, str]]:
    return {span_key(s) for s in (answer or {}).get("spans", [])}
