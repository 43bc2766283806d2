"""The extraction task: an answer is the set of character spans of the project's fields in a text.

``{"spans": [{"start": int, "end": int, "field": str}, ...]}``, offsets into the text,
end exclusive, sorted by (start, end, field) and without repeats. Spans of different
fields may overlap; the same (start, end, field) appears once.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping

from tasks.base import Answer, AnswerError, Category, Task, json_answer
from tasks.extraction import measure
from tasks.extraction.spans import locate, normalise_spans, span_key, spans_to_fields

SUMMARY_LIMIT = 100


class ExtractionTask(Task):
    type = "extraction"
    title = "Extraction"
    category_noun = "field"
    card_template = "tasks/extraction/card.html"
    file_answers = "spans"
    export_formats = ("jsonl", "conll")
    evaluation_template = "tasks/extraction/evaluation.html"
    score_name = "strict F1"
    right_name = "exact match"
    # A text may hold no field at all: one field is a task (dates out of e-mails).
    min_training_categories = 1
    # Highlight colours of fields that have none of their own.
    PALETTE = ("#f4a261", "#2a9d8f", "#e9c46a", "#8ab17d", "#e76f51", "#7fa7d9", "#c38fd0", "#b5838d")

    def __init__(self, categories: list[Category]):
        super().__init__(categories)
        self.by_name = {c.name: c for c in self.categories}

    # --- the answer ---------------------------------------------------------------------

    def validate(self, value: Answer, *, text: str) -> Answer:
        if not isinstance(value, Mapping) or "spans" not in value:
            raise AnswerError('an extraction answer is {"spans": [{"start", "end", "field"}, ...]}')
        spans = normalise_spans(text, value["spans"])
        unknown = sorted({s["field"] for s in spans} - set(self.by_name))
        if unknown:
            raise AnswerError(
                f"unknown field {', '.join(map(repr, unknown))}; the fields are {', '.join(self.names) or 'none'}"
            )
        counts = Counter(s["field"] for s in spans)
        for name, count in counts.items():
            if count > 1 and not self.by_name[name].allows_many:
                values = ", ".join(repr(text[s["start"] : s["end"]]) for s in spans if s["field"] == name)
                raise AnswerError(f"field {name!r} takes one value but has {count}: {values}")
        return {"spans": spans}

    def same(self, a: Answer, b: Answer) -> bool:
        if a is None or b is None:
            return a is b
        return sorted(map(span_key, a["spans"])) == sorted(map(span_key, b["spans"]))

    def summary(self, value: Answer, *, text: str = "") -> str:
        """``date: 12 May · people: 4``; without the text, counts (``date ×1 · people ×2``)."""
        if value is None:
            return ""
        spans = sorted(value.get("spans", []), key=span_key)
        if not spans:
            return "(no fields)"
        if text:
            parts = [f"{s['field']}: {_one_line(text[s['start'] : s['end']])}" for s in spans]
        else:
            counts = Counter(s["field"] for s in spans)
            parts = [f"{name} ×{n}" for name, n in counts.items()]
        line = " · ".join(parts)
        return line if len(line) <= SUMMARY_LIMIT else line[: SUMMARY_LIMIT - 1] + "…"

    # --- the teacher --------------------------------------------------------------------

    def prompt_block(self) -> str:
        lines = ["Fields:"]
        for category in self.categories:
            description = (category.description or "").strip()
            how_many = "any number of values" if category.allows_many else "at most one value"
            lines.append(f"- {category.name} ({how_many})" + (f": {description}" if description else ""))
        names = ", ".join(json.dumps(name) for name in self.names)
        lines += [
            "",
            "Answer with a JSON object and nothing else: "
            f'{{"entities": [{{"field": <one of {names}>, "text": <the value>}}, ...]}}.',
            "Copy each value exactly as it is written in the text (same spelling, case and spacing), "
            "list the values in the order they appear, list a value twice if the text holds it twice, "
            'and answer {"entities": []} when the text holds none of the fields.',
        ]
        return "\n".join(lines)

    def response_format(self) -> dict:
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "extraction",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {
                        "entities": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string", "enum": list(self.names)},
                                    "text": {"type": "string"},
                                },
                                "required": ["field", "text"],
                                "additionalProperties": False,
                            },
                        }
                    },
                    "required": ["entities"],
                    "additionalProperties": False,
                },
            },
        }

    def parse_teacher(self, content: str | None, *, text: str) -> tuple[Answer | None, str]:
        """Every value located verbatim in the text, or (None, why): never a partial answer."""
        obj, error = json_answer(content)
        if error:
            return None, error
        entities = obj.get("entities") if isinstance(obj, dict) else obj
        if not isinstance(entities, list):
            return None, f'answer has no "entities" list: {content[:200]!r}'
        names, values = [], []
        for index, entity in enumerate(entities):
            if not isinstance(entity, dict):
                return None, f"entity {index + 1} is not an object"
            field, value = entity.get("field"), entity.get("text")
            if not isinstance(field, str) or field not in self.by_name:
                return None, f"entity {index + 1} names an unknown field {field!r}"
            if not isinstance(value, str) or not value.strip():
                return None, f"entity {index + 1} ({field}) has an empty text"
            if not self.by_name[field].allows_many and (field, value.strip()) in zip(
                names, values, strict=True
            ):
                continue  # the same single value named twice is one value
            names.append(field)
            values.append(value.strip())
        try:
            places = locate(text, values, names)
            answer = self.validate(
                {
                    "spans": [
                        {"start": s, "end": e, "field": f} for (s, e), f in zip(places, names, strict=True)
                    ]
                },
                text=text,
            )
        except AnswerError as exc:
            return None, str(exc)
        return answer, ""

    def repair_request(self, reason: str) -> str:
        names = ", ".join(json.dumps(name) for name in self.names)
        return (
            f"That answer was invalid ({reason}). Reply with only a JSON object "
            f'{{"entities": [{{"field": <one of {names}>, "text": <the value>}}, ...]}}, '
            "each value copied exactly from the text."
        )

    def logprob_confidence(
        self, content: str, value: Answer, tokens: list[tuple[str, float]]
    ) -> float | None:
        """The probability of the whole reply: every entity listed, and none more.

        For a span set every token of the reply is a choice (which values, which
        fields, where the list stops), so all of them count; None when the tokens do
        not spell the content.
        """
        if not tokens or "".join(token for token, _ in tokens) != content:
            return None
        return max(0.0, min(1.0, math.exp(sum(logprob for _, logprob in tokens))))

    def example_reply(self, value: Answer, *, text: str) -> str:
        entities = [
            {"field": s["field"], "text": text[s["start"] : s["end"]]}
            for s in sorted(value["spans"], key=span_key)
        ]
        return json.dumps({"entities": entities}, ensure_ascii=False)

    # --- the teacher's defaults and the offline teacher -----------------------------------

    default_instructions = (
        "You extract fields from texts for the task described below. Read the guidelines and "
        "the field definitions, then list every value of those fields that the text holds."
    )
    teacher_max_tokens = 512
    offline_teacher_name = "dictionary"
    offline_teacher_about = (
        "the offline dictionary teacher: every value reviewers marked for a field is looked for "
        "(any case, whole words) in new texts; it knows no value nobody has marked yet"
    )
    offline_teacher_zero_shot = False

    def offline_teacher(self, memory: list[tuple[str, Answer]], *, k: int = 10):
        from tasks.extraction.offline import DictionaryTeacher

        return DictionaryTeacher(self.categories, memory)

    # --- people -------------------------------------------------------------------------

    def agreement(self, pairs: list[tuple[Answer | None, Answer | None]], *, texts: list[str]) -> dict:
        return measure.agreement(pairs, texts=texts)

    # --- measuring ----------------------------------------------------------------------

    def metrics(
        self,
        gold: list[Answer],
        predicted: list[Answer | None],
        *,
        texts: list[str],
        confidences: list[float | None] | None = None,
        target_accuracy: float = 0.95,
    ) -> dict:
        return measure.extraction_metrics(
            gold,
            predicted,
            texts=texts,
            fields=self.names,
            confidences=confidences,
            target_accuracy=target_accuracy,
        )

    def is_right(self, gold: Answer, predicted: Answer | None) -> bool:
        if predicted is None or gold is None:
            return False
        return {span_key(s) for s in gold["spans"]} == {span_key(s) for s in predicted["spans"]}

    def student_answer(self, value: Answer, *, text: str = "") -> Answer:
        """The student's spans, keeping only the surest value of a field that takes one and
        none of a field the project no longer has (BIO decoding knows neither rule)."""
        kept, single = [], {}
        for span in value.get("spans", []):
            category = self.by_name.get(span["field"])
            if category is None:
                continue
            if category.allows_many:
                kept.append(span)
            elif span["field"] not in single or (span.get("confidence") or 0) > (
                single[span["field"]].get("confidence") or 0
            ):
                single[span["field"]] = span
        return {"spans": sorted([*kept, *single.values()], key=span_key)}

    def stratum(self, value: Answer) -> str:
        # Texts holding the same fields are alike enough to split together.
        return "+".join(sorted({s["field"] for s in (value or {}).get("spans", [])})) or "(none)"

    def category_counts(self, answers: list[Answer]) -> dict[str, int]:
        counts = Counter(s["field"] for a in answers if a for s in a.get("spans", []))
        return {name: counts[name] for name in [*self.names, *sorted(set(counts) - set(self.names))]}

    def color(self, field: str) -> str:
        category = self.by_name.get(field)
        if category is not None and category.color:
            return category.color
        index = self.names.index(field) if field in self.by_name else len(self.names)
        return self.PALETTE[index % len(self.PALETTE)]

    def marked(self, text: str, value: Answer | None) -> list[dict]:
        """The text cut where spans start and end: ``{"text", "fields": [{"name", "color"}]}`` pieces."""
        spans = (value or {}).get("spans", [])
        cuts = sorted({0, len(text), *(s["start"] for s in spans), *(s["end"] for s in spans)})
        pieces = []
        for start, end in zip(cuts, cuts[1:], strict=False):
            fields = sorted({s["field"] for s in spans if s["start"] <= start and end <= s["end"]})
            pieces.append(
                {"text": text[start:end], "fields": [{"name": f, "color": self.color(f)} for f in fields]}
            )
        return pieces

    WORST_EXAMPLES = 15

    def evaluation_context(self, metrics: dict, rows: list[dict], texts: dict[int, str]) -> dict:
        """The worst gold items (most wrong spans, then the most confident), both sides highlighted."""
        worst = []
        for row in rows:
            gold, predicted = _keys(row["gold"]), _keys(row["predicted"])
            errors = len(gold ^ predicted)
            if errors:
                worst.append((errors, row.get("confidence") or 0.0, row))
        worst.sort(key=lambda item: (-item[0], -item[1], item[2]["example"]))
        examples = []
        for errors, _, row in worst[: self.WORST_EXAMPLES]:
            text = texts.get(row["example"], "")
            examples.append(
                {
                    "id": row["example"],
                    "errors": errors,
                    "missed": len(_keys(row["gold"]) - _keys(row["predicted"])),
                    "spurious": len(_keys(row["predicted"]) - _keys(row["gold"])),
                    "confidence": row.get("confidence"),
                    "gold": self.marked(text, row["gold"]),
                    "predicted": self.marked(text, row["predicted"])
                    if row["predicted"] is not None
                    else None,
                }
            )
        return {
            "worst": examples,
            "wrong_texts": len(worst),
            "legend": [{"name": name, "color": self.color(name)} for name in self.names],
        }

    # --- serving ------------------------------------------------------------------------

    def served(self, value: Answer | None, *, text: str) -> dict:
        """``spans`` (field, start, end, text, confidence where known) and the ``fields`` object."""
        if value is None:
            return {"spans": None, "fields": None}
        spans = []
        for span in sorted(value["spans"], key=span_key):
            item = {
                "field": span["field"],
                "start": span["start"],
                "end": span["end"],
                "text": text[span["start"] : span["end"]],
            }
            if span.get("confidence") is not None:
                item["confidence"] = round(float(span["confidence"]), 4)
            spans.append(item)
        return {"spans": spans, "fields": spans_to_fields(text, spans, self.categories)}

    def drop_in_content(self, value: Answer | None, *, text: str, wants_json: bool = True) -> str:
        """The fields object (``{"date": "12 May", "people": ["4"]}``) as JSON, whatever was asked:
        a client that called an LLM for extraction parses JSON."""
        return json.dumps(self.served(value, text=text)["fields"], ensure_ascii=False)


def _keys(answer: Mapping | None) -> set[tuple[int, int, str]]:
    return {span_key(s) for s in (answer or {}).get("spans", [])}


def _one_line(value: str) -> str:
    return " ".join(value.split())
