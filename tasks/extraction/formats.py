"""Extraction files in and out: JSONL with spans or a fields object, and CoNLL BIO.

Readers are all or nothing: they read every line, collect every bad one, and raise
SpanFormatError listing them (with line numbers), or return every row. Writers give
back what the readers read: ``read(write(rows))`` has the same texts and spans.

Readers take the file as text (a string or an iterable of lines); decoding and
size limits are the import's business.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tasks.base import AnswerError, Category
from tasks.extraction.spans import (
    conll_to_example,
    example_to_conll,
    fields_to_spans,
    normalise_spans,
    parse_tag,
    span_key,
    spans_to_fields,
)

# Keys of a JSONL line that carry the answer, not metadata.
ANSWER_KEYS = frozenset({"text", "spans", "fields", "entities", "label", "id", "metadata"})
ERRORS_SHOWN = 20


class SpanFormatError(ValueError):
    """A file that cannot be imported; ``errors`` lists (line, reason), ``line`` is the first."""

    def __init__(self, errors: Sequence[tuple[int, str]]):
        self.errors = list(errors)
        self.line = self.errors[0][0]
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.errors[:ERRORS_SHOWN])
        more = len(self.errors) - ERRORS_SHOWN
        super().__init__(shown + (f" (and {more} more)" if more > 0 else ""))


@dataclass(slots=True)
class SpanRow:
    """One text of a file. ``spans`` is None for a text without an answer (unlabelled)."""

    line: int
    text: str
    spans: list[dict] | None
    external_id: str = ""
    metadata: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # how a fields object's values were placed


class _Task:
    """What a reader checks spans against: a task's validate, or only the span rules."""

    def __init__(self, task):
        self.task = task

    def check(self, text: str, spans: list[dict]) -> list[dict]:
        if self.task is None:
            return normalise_spans(text, spans)
        return self.task.validate({"spans": spans}, text=text)["spans"]


def _lines(source: str | Iterable[str]) -> Iterator[tuple[int, str]]:
    lines = source.splitlines() if isinstance(source, str) else source
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line.rstrip("\r\n")


def fields_in(rows: Iterable[SpanRow]) -> list[str]:
    """The field names a file uses, in order of first use (to define a new project's fields)."""
    return list(dict.fromkeys(s["field"] for row in rows for s in row.spans or ()))


# --- JSONL ------------------------------------------------------------------------------


def read_jsonl(
    source: str | Iterable[str], *, task=None, skip: Collection[str] = (), context=None
) -> list[SpanRow]:
    """Rows of a JSONL file, each ``{"text", "spans": [...]}`` or ``{"text", "fields": {...}}``.

    Spans may be ``{"start", "end", "label"|"field"}`` objects (doccano, Prodigy),
    Label Studio's ``"labels": [name]``, or ``[start, end, label]`` triples; doccano's
    ``"entities"`` with ``start_offset``/``end_offset`` and its ``"label": [[s, e, l]]``
    are read too. A span that also gives its ``text`` must point at that text. With
    both spans and fields (this app's export) the spans are used. A line with neither
    is an unlabelled text. Other keys become metadata, except those in ``skip``.
    With a task, each answer is validated by it (known fields, one value where one is
    allowed). A fields object's value the text holds more often than it is named is placed by
    ``spans.locate``'s rule with `context`; the row's ``notes`` count those placements.
    """
    checker, rows, errors = _Task(task), [], []
    for line, raw in _lines(source):
        if not raw.strip():
            continue
        try:
            rows.append(_jsonl_row(line, raw, checker, skip, context))
        except (AnswerError, ValueError) as exc:
            errors.append((line, str(exc)))
    if errors:
        raise SpanFormatError(errors)
    return rows


def _jsonl_row(line: int, raw: str, checker: _Task, skip: Collection[str], context=None) -> SpanRow:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:  # the parser's own limit: a bad line, not a failed import
        raise ValueError("not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise ValueError("is not a JSON object")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError('has no "text" string')
    spans = _spans_of(obj, text)
    rules: list[str] = []
    if spans is None and obj.get("fields") is not None:
        spans = fields_to_spans(text, obj["fields"], context=context, rules=rules)
    if spans is not None:
        spans = checker.check(text, spans)
    metadata = dict(obj["metadata"]) if isinstance(obj.get("metadata"), dict) else {}
    for key, value in obj.items():
        if key not in ANSWER_KEYS and key not in skip:
            metadata[key] = value
    external_id = obj.get("id")
    return SpanRow(
        line=line,
        text=text,
        spans=spans,
        external_id="" if external_id is None else str(external_id),
        metadata=metadata,
        notes=placement_notes(rules),
    )


PLACEMENT_NOTES = {
    "ambiguous": "values the text holds more often than they were named: placed at one occurrence",
    "by_context": "of them placed where the words reviewers' spans of the field follow precede it",
    "first": "of them placed at the first free occurrence (reviewed spans say nothing there)",
}


def answer_placements(text: str, answer: dict | None, context) -> dict[str, int]:
    """The answer's ambiguous spans (``risk.ambiguous_spans``) and the rule that puts each."""
    from tasks.extraction.risk import ambiguous_spans
    from tasks.extraction.spans import placement_rule

    spans = ambiguous_spans(text, (answer or {}).get("spans", []))
    return placement_notes([placement_rule(text, s, context) for s in spans])


def placement_notes(rules: list[str]) -> dict[str, int]:
    """``PLACEMENT_NOTES`` counts of these placements ("context", "first")."""
    if not rules:
        return {}
    return {
        "ambiguous": len(rules),
        "by_context": rules.count("context"),
        "first": rules.count("first"),
    }


def _spans_of(obj: dict, text: str) -> list[dict] | None:
    if obj.get("spans") is not None:
        items, start_key, end_key = obj["spans"], "start", "end"
    elif "entities" in obj:
        items, start_key, end_key = obj["entities"], "start_offset", "end_offset"
    elif isinstance(obj.get("label"), list):
        items, start_key, end_key = obj["label"], "start", "end"
    elif isinstance(obj.get("label"), str):
        raise ValueError(
            '"label" is a single label (classification); an extraction line has "spans" or "fields"'
        )
    else:
        return None
    if not isinstance(items, list):
        raise ValueError("the spans must be a list")
    spans = []
    for index, item in enumerate(items, start=1):
        if isinstance(item, (list, tuple)) and len(item) == 3:
            start, end, name, value = item[0], item[1], item[2], None
        elif isinstance(item, dict):
            start, end = item.get(start_key, item.get("start")), item.get(end_key, item.get("end"))
            name = item.get("label", item.get("field"))
            if name is None and isinstance(item.get("labels"), list) and len(item["labels"]) == 1:
                name = item["labels"][0]
            value = item.get("text")
        else:
            raise ValueError(f"span {index} is neither an object nor [start, end, label]")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'span {index} has no "label" (or "field")')
        if (
            isinstance(value, str)
            and isinstance(start, int)
            and isinstance(end, int)
            and 0 <= start < end <= len(text)
            and text[start:end] != value
        ):
            raise ValueError(
                f"span {index} ({start}-{end}) says {value!r} but the text there is {text[start:end]!r}"
            )
        spans.append({"start": start, "end": end, "field": name})
    return spans


def jsonl_record(
    text: str, spans: Sequence[Mapping] | None, *, categories: Sequence[Category] | None = None, **extra
) -> dict:
    """One export line: the text, its spans (offsets, label, text) and its fields object.

    Extra keys (id, metadata, provenance) go after them; an unlabelled text (spans None)
    has neither spans nor fields.
    """
    record: dict = {"text": text}
    if spans is not None:
        ordered = sorted(spans, key=span_key)
        record["spans"] = [
            {"start": s["start"], "end": s["end"], "label": s["field"], "text": text[s["start"] : s["end"]]}
            for s in ordered
        ]
        record["fields"] = spans_to_fields(text, ordered, categories)
    record.update(extra)
    return record


def write_jsonl(records: Iterable[dict]) -> Iterator[str]:
    """JSONL lines of records made by jsonl_record."""
    for record in records:
        yield json.dumps(record, ensure_ascii=False, default=str) + "\n"


# --- CoNLL BIO --------------------------------------------------------------------------


def read_conll(source: str | Iterable[str], *, task=None) -> list[SpanRow]:
    """Rows of a CoNLL BIO file: ``token<TAB>tag`` (or space-separated, the tag last),
    a blank line between sentences, ``-DOCSTART-`` lines ignored. Each sentence is one
    text, its tokens joined by single spaces. I- without B- starts a span.
    """
    checker, rows, errors = _Task(task), [], []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0

    def close() -> None:
        if not tokens:
            return
        try:
            text, spans = conll_to_example(tokens, tags)
            rows.append(SpanRow(line=first_line, text=text, spans=checker.check(text, spans)))
        except (AnswerError, ValueError) as exc:
            errors.append((first_line, str(exc)))
        tokens.clear()
        tags.clear()

    for line, raw in _lines(source):
        if not raw.strip():
            close()
            continue
        parts = raw.split("\t") if "\t" in raw else raw.split()
        token = parts[0].strip()
        if token.startswith("-DOCSTART-"):
            close()
            continue
        if len(parts) < 2 or not token:
            errors.append((line, "expected a token and its tag (token<TAB>tag)"))
            continue
        tag = parts[-1].strip()
        try:
            prefix, _ = parse_tag(tag)
        except ValueError as exc:
            errors.append((line, str(exc)))
            continue
        if prefix == "I" and tag[:2] not in ("I-", "i-"):
            errors.append((line, f"tag {tag!r} is not O, B-<field> or I-<field>"))
            continue
        if not tokens:
            first_line = line
        tokens.append(token)
        tags.append(tag)
    close()
    if errors:
        raise SpanFormatError(errors)
    return rows


def write_conll(rows: Iterable[tuple[str, Sequence[Mapping] | None]]) -> Iterator[str]:
    """CoNLL BIO text of (text, spans) pairs, a blank line after each text.

    Unlabelled texts (spans None) are left out: CoNLL cannot say "not annotated".
    Tokens are the text's whitespace tokens, split where a span begins or ends inside
    one; where spans overlap only the first is written (BIO holds one field per token).
    """
    for text, spans in rows:
        if spans is None:
            continue
        pairs = example_to_conll(text, spans)
        if not pairs:
            continue
        yield "".join(f"{token}\t{tag}\n" for token, tag in pairs) + "\n"


def read_answer_chunk(lines: list[str], *, fmt: str, skip: Collection[str] = (), context=None) -> list:
    """Consecutive lines of a JSONL or CoNLL file as the importer's rows (``tasks.base.FileRow``)."""
    from tasks.base import AnswerFileError, FileRow

    try:
        found = read_conll(lines) if fmt == "conll" else read_jsonl(lines, skip=skip, context=context)
    except SpanFormatError as exc:
        raise AnswerFileError(exc.errors) from None
    return [
        FileRow(
            line=row.line,
            text=row.text,
            answer=None if row.spans is None else {"spans": row.spans},
            external_id=row.external_id,
            metadata=row.metadata,
            notes=row.notes or None,
        )
        for row in found
    ]


def file_record(record: dict, *, categories) -> dict:
    """An export record as a JSONL line: spans and fields in place of its label, then the rest."""
    extra = {key: value for key, value in record.items() if key not in ("text", "label")}
    answer = record["label"]
    spans = answer["spans"] if isinstance(answer, dict) else None
    return jsonl_record(record["text"], spans, categories=categories, **extra)
