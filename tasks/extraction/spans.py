"""Character spans in a text: normal form, locating values, snapping, fields objects, BIO.

A span is ``{"start": int, "end": int, "field": str}`` with character (code point)
offsets into the text, end exclusive. Everything here works on plain values.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

import regex

from tasks.base import AnswerError, Category

Span = dict  # {"start": int, "end": int, "field": str}; see the module docstring.


class ValueNotInText(AnswerError):
    """A value (from the teacher or a fields object) that does not occur in the text."""

    def __init__(self, value: str, field: str = ""):
        self.value = value
        self.field = field
        named = f" ({field})" if field else ""
        super().__init__(f"{value!r}{named} is not in the text")


def span_key(span: Mapping) -> tuple[int, int, str]:
    return (span["start"], span["end"], span["field"])


def normalise_spans(text: str, spans: object) -> list[Span]:
    """Spans checked against the text, trimmed of surrounding whitespace, sorted, without repeats.

    Raises AnswerError naming the first span that is not a span of this text.
    """
    if not isinstance(spans, list):
        raise AnswerError('"spans" must be a list of {"start", "end", "field"} objects')
    found: set[tuple[int, int, str]] = set()
    for index, span in enumerate(spans):
        if not isinstance(span, Mapping):
            raise AnswerError(f"span {index + 1} is not an object with start, end and field")
        start, end, field = span.get("start"), span.get("end"), span.get("field")
        if not _is_int(start) or not _is_int(end):
            raise AnswerError(f"span {index + 1}: start and end must be whole numbers")
        if not isinstance(field, str) or not field.strip():
            raise AnswerError(f"span {index + 1}: field must be a non-empty string")
        if start >= end:
            raise AnswerError(f"span {index + 1} ({start}-{end}, {field}) is empty: start must be below end")
        if start < 0 or end > len(text):
            raise AnswerError(
                f"span {index + 1} ({start}-{end}, {field}) is outside the text of {len(text)} characters"
            )
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            raise AnswerError(f"span {index + 1} ({field}) holds only whitespace")
        found.add((start, end, field.strip()))
    return [{"start": s, "end": e, "field": f} for s, e, f in sorted(found)]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- locating values --------------------------------------------------------------------


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


def _on_word_boundaries(text: str, start: int, end: int) -> bool:
    """Does text[start:end] neither begin nor end inside a word (so "4" is not found in "14")?"""
    if start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
        return False
    return not (end < len(text) and _is_word_char(text[end - 1]) and _is_word_char(text[end]))


def _pattern(value: str) -> str:
    # Any run of whitespace in the value matches any run in the text: a value the LLM
    # writes on one line still finds a text that breaks it over two.
    return r"\s+".join(re.escape(part) for part in value.split())


def _nfc_view(text: str) -> tuple[str, dict[int, int]]:
    """The text in NFC, and where each character cluster of it starts and ends in the original."""
    pieces, where, position, normal_length = [], {0: 0}, 0, 0
    for cluster in regex.finditer(r"\X", text):
        piece = unicodedata.normalize("NFC", cluster.group())
        pieces.append(piece)
        position = cluster.end()
        normal_length += len(piece)
        where[normal_length] = position
    return "".join(pieces), where


def occurrences(text: str, value: str) -> list[tuple[int, int]]:
    """Where a value occurs in the text, in text order, from the best tier that finds it.

    Tiers: exact case on word boundaries, exact case anywhere, any case on word
    boundaries, any case anywhere, then the same on the NFC form of both strings
    (a value typed with a precomposed "é" finds "e" + combining accent).
    """
    pattern = _pattern(value)
    if not pattern:
        return []
    for flags in (0, re.IGNORECASE):
        found = [(m.start(), m.end()) for m in re.finditer(pattern, text, flags)]
        bounded = [(s, e) for s, e in found if _on_word_boundaries(text, s, e)]
        if bounded or found:
            return bounded or found
    normal, where = _nfc_view(text)
    normal_pattern = _pattern(unicodedata.normalize("NFC", value))
    for flags in (0, re.IGNORECASE):
        found = [
            (where[m.start()], where[m.end()])
            for m in re.finditer(normal_pattern, normal, flags)
            if m.start() in where and m.end() in where
        ]
        bounded = [(s, e) for s, e in found if _on_word_boundaries(text, s, e)]
        if bounded or found:
            return bounded or found
    return []


def locate(
    text: str,
    values: Sequence[str],
    fields: Sequence[str] | None = None,
    *,
    context: Mapping[str, Counter] | None = None,
    rules: list[str] | None = None,
) -> list[tuple[int, int]]:
    """(start, end) of each value in the text, repeated values resolved in order.

    The n-th mention of a value maps to its n-th occurrence, so the second "4" is the
    second "4" of the text; a value mentioned more often than it occurs maps its extra
    mentions to its last occurrence (the same span for another field, or a repeat that
    normalising drops). A value not in the text raises ValueNotInText.

    A value mentioned FEWER times than it occurs leaves a choice (a receipt's total that is
    also an item's price): with `context` (``placement_context``: the words reviewers' spans
    of each field follow), each mention takes the free occurrence its field's words precede
    most, and the first free one where they say nothing. `rules` gets "context" or "first"
    for each such choice, in order.
    """
    mentions: Counter[str] = Counter()
    totals = Counter(v.strip() for v in values if isinstance(v, str))
    found: dict[str, list[tuple[int, int]]] = {}
    used: dict[str, set[int]] = {}
    result = []
    for index, value in enumerate(values):
        field = fields[index] if fields is not None else ""
        if not isinstance(value, str) or not value.strip():
            raise AnswerError(f"an empty value{f' for {field}' if field else ''}")
        key = value.strip()
        if key not in found:
            found[key] = occurrences(text, key)
        places = found[key]
        if not places:
            raise ValueNotInText(key, field)
        if len(places) > totals[key]:
            free = [i for i in range(len(places)) if i not in used.setdefault(key, set())]
            words = (context or {}).get(field)
            scores = [_context_score(text, places[i][0], words) for i in free]
            best = max(range(len(free)), key=lambda j: (scores[j], -j))
            choice, rule = (free[best], "context") if scores[best] > 0 else (free[0], "first")
            used[key].add(choice)
            if rules is not None:
                rules.append(rule)
            result.append(places[choice])
        else:
            result.append(places[min(mentions[key], len(places) - 1)])
        mentions[key] += 1
    return result


# How many words before a value say which field it is ("Total:", "table for").
CONTEXT_WORDS = 2
_WORD = re.compile(r"[^\W\d_]+")  # letters only: a price before a total says nothing


def context_words(text: str, start: int) -> list[str]:
    """The (casefolded) words just before `start`."""
    return [w.casefold() for w in _WORD.findall(text[max(0, start - 80) : start])][-CONTEXT_WORDS:]


def placement_context(reviewed: Iterable[tuple[str, Mapping]]) -> dict[str, Counter]:
    """For each field, how often each word comes just before its values in reviewed answers."""
    context: dict[str, Counter] = {}
    for text, answer in reviewed:
        for span in (answer or {}).get("spans", []):
            context.setdefault(span["field"], Counter()).update(context_words(text, span["start"]))
    return context


def _context_score(text: str, start: int, words: Counter | None) -> float:
    if not words:
        return 0.0
    return sum(words[w] for w in context_words(text, start)) / sum(words.values())


def placement_rule(text: str, span: Mapping, context: Mapping[str, Counter] | None) -> str:
    """How ``locate`` places this span's value among its occurrences: "context" where its
    field's words say it sits here, "first" where they say nothing."""
    value = text[span["start"] : span["end"]]
    scores = [
        _context_score(text, s, (context or {}).get(span["field"])) for s, _ in occurrences(text, value)
    ]
    return "context" if scores and max(scores) > 0 else "first"


# --- snapping a selection ---------------------------------------------------------------


def snap_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """A selection grown to whole words (and whole characters: emoji, accents), trimmed of whitespace.

    A selection that begins or ends inside a word takes the whole word, the way the
    review card snaps a mouse or keyboard selection. A selection of only whitespace
    comes back empty (start == end).
    """
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    if start > end:
        start, end = end, start
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        return start, start
    clusters = [(m.start(), m.end()) for m in regex.finditer(r"\X", text)]
    first = next(i for i, (_, e) in enumerate(clusters) if e > start)
    last = next(i for i in range(len(clusters) - 1, -1, -1) if clusters[i][0] < end)

    def is_word(i: int) -> bool:
        return _is_word_char(text[clusters[i][0]])

    while first > 0 and is_word(first) and is_word(first - 1):
        first -= 1
    while last < len(clusters) - 1 and is_word(last) and is_word(last + 1):
        last += 1
    return clusters[first][0], clusters[last][1]


# --- fields objects ---------------------------------------------------------------------


def fields_to_spans(
    text: str,
    fields: Mapping[str, object],
    *,
    context: Mapping[str, Counter] | None = None,
    rules: list[str] | None = None,
) -> list[Span]:
    """Spans for a fields object like ``{"date": "12 May", "people": ["4"]}``, located in its order.

    A field's value is a string, a list of strings, or null / "" / [] for none.
    A value not in the text raises ValueNotInText naming the value and its field; one it
    holds more often than it is named is placed by ``locate``'s rule (`context`, `rules`).
    """
    if not isinstance(fields, Mapping):
        raise AnswerError('"fields" must be an object of field: value or [values]')
    names, values = [], []
    for name, value in fields.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None or item == "":
                continue
            if not isinstance(item, str):
                raise AnswerError(f"field {name!r}: a value must be a string, not {item!r}")
            names.append(name)
            values.append(item)
    places = locate(text, values, names, context=context, rules=rules)
    return normalise_spans(
        text, [{"start": s, "end": e, "field": f} for (s, e), f in zip(places, names, strict=True)]
    )


def spans_to_fields(
    text: str, spans: Iterable[Mapping], categories: Sequence[Category] | None = None
) -> dict[str, str | list[str] | None]:
    """The fields object of a span set, values in text order.

    With the categories, every field is present: a list for a field that allows many
    values, else the one value (or null). Without them, each field found maps to a list.
    """
    values: dict[str, list[str]] = {}
    for span in sorted(spans, key=span_key):
        values.setdefault(span["field"], []).append(text[span["start"] : span["end"]])
    if categories is None:
        return values
    result: dict[str, str | list[str] | None] = {}
    for category in categories:
        found = values.pop(category.name, [])
        result[category.name] = found if category.allows_many else (found[0] if found else None)
    result.update(values)  # a field the project no longer has still shows
    return result


# --- BIO over whitespace tokens ---------------------------------------------------------

BIO_PREFIXES = {"B": "begin", "I": "inside", "E": "inside", "L": "inside", "S": "single", "U": "single"}


def whitespace_tokens(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def parse_tag(tag: str) -> tuple[str, str]:
    """("O", "") or (prefix, field) of a BIO/BIOES tag; a bare tag reads as inside (IO scheme)."""
    tag = tag.strip()
    if tag in ("O", ""):
        return "O", ""
    prefix, dash, field = tag.partition("-")
    if dash and prefix.upper() in BIO_PREFIXES:
        if not field.strip():
            raise ValueError(f"tag {tag!r} names no field")
        return prefix.upper(), field.strip()
    return "I", tag


def conll_to_example(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Span]]:
    """The text (tokens joined by single spaces) and its spans from BIO tags.

    Tolerant of tagging slips: an I- without a B- (or after another field) starts a
    span; BIOES/BILOU prefixes are read too.
    """
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    pieces, spans, position = [], [], 0
    current: list | None = None  # [start, end, field]
    for token, tag in zip(tokens, tags, strict=True):
        if pieces:
            position += 1
        start, end = position, position + len(token)
        pieces.append(token)
        position = end
        prefix, field = parse_tag(tag)
        kind = BIO_PREFIXES.get(prefix, "outside")
        if kind == "inside" and current is not None and current[2] == field:
            current[1] = end
        else:
            if current is not None:
                spans.append(current)
            current = [start, end, field] if kind != "outside" else None
        if current is not None and (kind == "single" or prefix in ("E", "L")):
            spans.append(current)
            current = None
    if current is not None:
        spans.append(current)
    text = " ".join(pieces)
    return text, normalise_spans(text, [{"start": s, "end": e, "field": f} for s, e, f in spans])


def without_overlaps(spans: Iterable[Mapping]) -> list[Mapping]:
    # BIO holds one field per token: where spans overlap, the one that starts first
    # (the longer one on a tie) is kept.
    kept, reach = [], 0
    for span in sorted(spans, key=lambda s: (s["start"], -s["end"], s["field"])):
        if span["start"] >= reach:
            kept.append(span)
            reach = span["end"]
    return kept


def example_to_conll(text: str, spans: Iterable[Mapping]) -> list[tuple[str, str]]:
    """(token, BIO tag) pairs over the text's whitespace tokens.

    A span boundary inside a token splits the token there ("13:00pm." with "13:00"
    marked gives "13:00" and "pm."), so every span keeps its exact value; where spans
    overlap only the first is written (see without_overlaps).
    """
    kept = without_overlaps(spans)
    cuts = {s["start"] for s in kept} | {s["end"] for s in kept}
    pairs = []
    for token_start, token_end in whitespace_tokens(text):
        inner = sorted(c for c in cuts if token_start < c < token_end)
        edges = [token_start, *inner, token_end]
        for start, end in pairwise(edges):
            span = next((s for s in kept if s["start"] <= start and end <= s["end"]), None)
            if span is None:
                tag = "O"
            else:
                tag = ("B-" if start == span["start"] else "I-") + span["field"]
            pairs.append((text[start:end], tag))
    return pairs


# One span as the prediction API answers it (OpenAPI 3.0; ExtractionTask.served_schema).
SERVED_SPAN = {
    "type": "object",
    "required": ["field", "start", "end", "text"],
    "properties": {
        "field": {"type": "string"},
        "start": {"type": "integer", "description": "Character offset, inclusive."},
        "end": {"type": "integer", "description": "Character offset, exclusive."},
        "text": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
