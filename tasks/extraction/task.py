"""The extraction task: an answer is the set of character spans of the project's fields in a text.

``{"spans": [{"start": int, "end": int, "field": str}, ...]}``, offsets into the text,
end exclusive, sorted by (start, end, field) and without repeats. Spans of different
fields may overlap; the same (start, end, field) appears once.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tasks.base import (
    Answer,
    AnswerError,
    Category,
    FileRow,
    SyntheticBrief,
    Task,
)
from tasks.extraction import measure
from tasks.extraction.reply import located_entities, logprob_confidences, sample_confidences
from tasks.extraction.risk import ERROR_KINDS
from tasks.extraction.spans import normalise_spans, span_key, spans_to_fields

if TYPE_CHECKING:
    import numpy as np

SUMMARY_LIMIT = 100


class ExtractionTask(Task):
    type = "extraction"
    title = "Extraction"
    category_noun = "field"
    card_template = "tasks/extraction/card.html"
    # No label column: JSONL spans or a fields object, or CoNLL BIO tags carry the answers.
    label_column = ""
    import_formats = ("csv", "tsv", "jsonl", "txt", "xlsx", "conll")
    answer_formats = ("jsonl", "conll")
    answer_files_about = "spans or a fields object (JSONL) or as BIO tags (CoNLL)"
    answer_noun = "spans"
    import_help = (
        "TXT, CSV, Excel (.xlsx, first sheet) or JSONL text only; JSONL with spans ({text, spans: [{start, end, label}]}) "
        "or a fields object ({text, fields: {...}}); CoNLL BIO (.conll, .bio). UTF-8."
    )
    export_formats = ("jsonl", "conll")
    export_about = (
        "Each JSONL line carries its text, its current spans (offsets and text) with a fields object, "
        "and provenance (proposals, reviews, gold versions); CoNLL BIO holds the labelled texts only."
    )
    evaluation_template = "tasks/extraction/evaluation.html"
    agreement_template = "tasks/extraction/agreement.html"
    score_name = "strict F1"
    right_name = "exact match"
    # A text may hold no field at all: one field is a task (dates out of e-mails).
    min_training_categories = 1
    # Per word over the spans' BIO tags, a text scored by its worst word (tasks/extraction/span_quality.py).
    scores_label_errors = True
    # Runs may leave out the texts the quality run flags (``label_quality``) and the flagged
    # words outside the spans of the rest from the loss (``label_quality_parts``); only the quick
    # student takes per-text weights (``noise_refusal``). On Restaurant-8k with the simulated
    # teacher both together beat pruning alone by 2.4-4.0 points and masking alone by 0.8-1.5
    # (bench/span_noise_bench.py; bench/README.md, "Review budget, extraction").
    handles_label_noise = True
    advised_noise_handling = "prune+mask"
    masks_label_noise = True
    # Highlight colours of fields that have none of their own.
    PALETTE = ("#f4a261", "#2a9d8f", "#e9c46a", "#8ab17d", "#e76f51", "#7fa7d9", "#c38fd0", "#b5838d")

    def __init__(self, categories: list[Category], options: dict | None = None):
        super().__init__(categories, options)
        self.by_name = {c.name: c for c in self.categories}
        # Which words precede each field's values in reviewed answers (``with_reviewed``).
        self.placement_context: dict[str, Counter] = {}

    # A value the text holds more often than a fields object or the teacher names it is placed
    # where its field's reviewed context words precede it, else at its first occurrence.
    learns_from_reviewed = True
    from tasks.extraction.formats import PLACEMENT_NOTES as answer_note_names

    def with_reviewed(self, reviewed: list[tuple[str, Answer]]) -> ExtractionTask:
        from tasks.extraction.spans import placement_context

        primed = copy.copy(self)
        primed.placement_context = placement_context(reviewed)
        return primed

    def answer_notes(self, answer: Answer, *, text: str) -> dict[str, int]:
        from tasks.extraction.formats import answer_placements

        return answer_placements(text, answer, self.placement_context)

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

    # Missed spans (the student marks one the teacher did not) first, then ambiguous
    # placements and boundaries: the first 10 % of the queue held 5.05x the random share of
    # missed spans on Restaurant-8k (bench/README.md, "Review budget, extraction").
    auto_order = "disagreement"

    def review_risk(self, teacher: Answer | None, student: Answer | None, *, text: str) -> float:
        from tasks.extraction.risk import review_risk

        return review_risk(teacher, student, text=text)

    error_kind_names = ERROR_KINDS

    def error_kinds(self, proposed: Answer, final: Answer | None, *, text: str) -> dict[str, int]:
        """Missed, boundary, wrong-field and spurious spans; a rejected text shows none."""
        from tasks.extraction.risk import error_kinds

        return error_kinds(final["spans"], proposed["spans"]) if final is not None else {}

    def summary(self, value: Answer, *, text: str = "") -> str:
        """``date: 12 May · people: 4``; without the text, counts (``date ×1 · people ×2``)."""
        if value is None:
            return ""
        spans = sorted(value.get("spans", []), key=span_key)
        if not spans:
            return "(no fields)"
        if text:
            parts = [f"{s['field']}: {' '.join(text[s['start'] : s['end']].split())}" for s in spans]
        else:
            counts = Counter(s["field"] for s in spans)
            parts = [f"{name} ×{n}" for name, n in counts.items()]
        line = " · ".join(parts)
        return line if len(line) <= SUMMARY_LIMIT else line[: SUMMARY_LIMIT - 1] + "…"

    # --- files --------------------------------------------------------------------------

    def answer_categories(self, answer: Answer) -> set[str]:
        return {s["field"] for s in answer["spans"]} if answer else set()

    def answers_naming(self, field: str, name: str) -> dict:
        # Answers whose JSON text holds the name (a superset); non-ASCII is stored escaped or not.
        return {f"{field}__icontains": name} if name.isascii() else super().answers_naming(field, name)

    def rename_category(self, answer: Answer, old: str, new: str) -> Answer:
        if not answer:
            return answer
        return {"spans": [{**s, "field": new} if s["field"] == old else s for s in answer["spans"]]}

    def shift_answer(self, answer: Answer, shift: int) -> Answer:
        if not shift:
            return answer
        return {
            "spans": [{**s, "start": s["start"] - shift, "end": s["end"] - shift} for s in answer["spans"]]
        }

    def read_answer_chunk(self, lines: list[str], *, fmt: str, skip) -> list[FileRow]:
        from tasks.extraction import formats

        return formats.read_answer_chunk(lines, fmt=fmt, skip=skip, context=self.placement_context)

    def file_record(self, record: dict) -> dict:
        """Each line's text, its spans (offsets, label, text) and fields object in place of its
        label, then the same provenance as any JSONL export."""
        from tasks.extraction import formats

        return formats.file_record(record, categories=self.categories)

    def write_file(self, fmt: str, records):
        """CoNLL BIO of the records with an answer; unlabelled ones have no place in BIO."""
        from tasks.extraction import formats

        if fmt != "conll":
            raise NotImplementedError(f"{self.title} writes no {fmt} files")
        return formats.write_conll(
            (r["text"], r["label"]["spans"] if isinstance(r["label"], dict) else None) for r in records
        )

    # --- the teacher --------------------------------------------------------------------

    def _fields_lines(self) -> list[str]:
        lines = ["Fields:"]
        for category in self.categories:
            description = (category.description or "").strip()
            how_many = "any number of values" if category.allows_many else "at most one value"
            lines.append(f"- {category.name} ({how_many})" + (f": {description}" if description else ""))
        return lines

    def prompt_block(self) -> str:
        lines = self._fields_lines()
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
        located, error = located_entities(
            content, text=text, by_name=self.by_name, context=self.placement_context
        )
        if error:
            return None, error
        try:
            answer = self.validate({"spans": [span for _, span in located]}, text=text)
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

    def logprob_answer(
        self, content: str, value: Answer, tokens: list[tuple[str, float]], *, text: str
    ) -> tuple[Answer, float | None]:
        """Each span's confidence from the log-probs of its own stretch of the reply, the text's
        the least sure of them (``reply.logprob_confidences`` says how and why)."""
        return logprob_confidences(
            content, value, tokens, text=text, by_name=self.by_name, context=self.placement_context
        )

    def consistency_answer(self, value: Answer, samples: list[Answer | None]) -> tuple[Answer, float]:
        """Each span's confidence is the share of the k samples that hold it (``reply.sample_confidences``)."""
        return sample_confidences(value, samples)

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

    # --- synthetic data -----------------------------------------------------------------

    writes_synthetic = True
    synthetic_about = (
        "The teacher LLM writes new texts per field, each with every value it holds. Each value "
        "is located in its text and the spans are stored as the teacher's proposal; an example "
        "with a value that is not in its text is refused and counted with the reason, never stored."
    )
    SYNTHETIC_DIFFICULTY = {
        "easy": "Write each value plainly, in its most common form.",
        "mixed": "Write most values plainly and a few in less common forms (abbreviations, words "
        "instead of digits, informal spellings).",
        "hard": "Write near-misses: values in unusual forms, and words that look like a value of "
        "{target}{confusable} but are not one (list only the real values).",
    }

    def synthetic_prompt(self, brief: SyntheticBrief) -> str:
        """Texts that each hold a value of the brief's field, and now and then of one or two
        others (drawn per call), with every value they hold listed verbatim."""
        field = brief.category
        others = [c for c in self.categories if c.name != field.name]
        rng = random.Random(brief.seed)
        also = rng.sample(others, rng.randint(0, min(2, len(others))))
        difficulty = self.SYNTHETIC_DIFFICULTY.get(brief.difficulty, self.SYNTHETIC_DIFFICULTY["mixed"])
        lines = [
            "You write realistic, varied training examples for a model that extracts fields from texts.",
            f"Write {brief.count} new, different texts that each hold a value of the field {field.name!r}"
            + (f" ({field.description})" if field.description else "")
            + "."
            + (f" Some of them also hold {' and '.join(repr(c.name) for c in also)}." if also else ""),
            difficulty.format(
                target=repr(field.name),
                confusable="".join(f" or {name!r}" for name in brief.confusable),
            ),
            "With each text, list every value of the fields below that the text holds (not only "
            "the ones asked for), in the order they appear. Copy each value exactly as it is "
            "written in the text (same spelling, case and spacing): a value that is not in its "
            "text word for word makes the example useless.",
        ]
        lines += self._fields_lines()
        names = ", ".join(json.dumps(name) for name in self.names)
        lines.append(
            'Each example is {"text": <the text>, "entities": [{"field": <one of '
            f'{names}>, "text": <the value>}}, ...]}}.'
        )
        return "\n".join(lines)

    def synthetic_item_schema(self) -> dict:
        entities = self.response_format()["json_schema"]["schema"]["properties"]["entities"]
        return {
            "type": "object",
            "properties": {"text": {"type": "string"}, "entities": entities},
            "required": ["text", "entities"],
            "additionalProperties": False,
        }

    def synthetic_item(self, item: object, *, brief: SyntheticBrief) -> tuple[str, Answer]:
        """The text and its spans, every value located in the text with the teacher's rules;
        refused when a value is not in the text or the text holds none of the field asked for."""
        if not isinstance(item, Mapping) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise AnswerError('an example is {"text": <a non-empty text>, "entities": [...]}')
        text = item["text"].strip()
        if not isinstance(item.get("entities"), list):
            raise AnswerError('the example has no "entities" list')
        answer, why = self.parse_teacher(json.dumps({"entities": item["entities"]}), text=text)
        if answer is None:
            raise AnswerError(why)
        if not any(span["field"] == brief.category.name for span in answer["spans"]):
            raise AnswerError(f"it holds no value of {brief.category.name!r}, the field it was written for")
        return text, answer

    # --- the student ------------------------------------------------------------------------

    # The fine-tune, and the quick student on frozen word vectors (seconds: review rounds).
    student_kinds = {"finetune": "student", "quick": "quick"}
    score_about = "1.000 would be every gold span found exactly, and no other"
    training_field_help = {
        "C": "Larger fits the reviewed spans more closely, smaller generalises more; 3 measured best on Restaurant-8k.",
        "class_weighting": "Weight the tags of rare fields up in the loss (it cost strict F1 on WNUT-17).",
    }

    def student_about(self, kind: str, base_models: list[str]) -> str:
        return {
            "finetune": (
                "Adapts the whole base model to tag each word of a text with its field: the better "
                "choice for rare fields and noisy text; minutes to an hour on a CPU (Restaurant-8k: "
                "strict F1 0.949)."
            ),
            "quick": (
                "Reads each word's vector from the frozen base model once and fits a logistic "
                "regression over the tags: about a minute, nearly as good on regular texts "
                "(Restaurant-8k: strict F1 0.925 against the fine-tune's 0.949). Use it to seed "
                "and to order review."
            ),
        }.get(kind, "")

    def default_hyperparameters(self, kind: str = "finetune") -> dict:
        if kind == "quick":
            from tasks.extraction.quick import DEFAULT_C

            # It embeds once and fits a head: no epochs or learning rate. Texts are read in
            # windows of 128 tokens, the length the base model was trained on.
            return {"C": DEFAULT_C, "max_length": 128}
        # Measured on WNUT-17 test (bench/README.md, "Extraction students"; one seed each, on
        # a 2-core AMD EPYC), 4 epochs: the shared 3e-4 scored strict F1 0.329, 3e-4 with
        # capitals 0.343, 1e-4 0.345, 1e-4 with capitals 0.346 (class weighting 0.203); then
        # 8 epochs at 1e-4 with capitals 0.388. Restaurant-8k: 0.943 (4 epochs), 0.946 (8).
        # Token classification learns a fresh head over every token: at 3e-4 it overfits the
        # few entities sooner, and at 1e-4 it needs the longer schedule.
        return {"epochs": 8, "learning_rate": 1e-4, "case_feature": True}

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

    def label_quality_scores(self, texts: list[str], answers: list[Answer]) -> np.ndarray:
        return self.label_quality_parts(texts, answers)[0]

    def label_quality(self, texts: list[str], answers: list[Answer]) -> tuple[np.ndarray, np.ndarray]:
        scores, issues, _ = self.label_quality_parts(texts, answers)
        return scores, issues

    def label_quality_parts(
        self, texts: list[str], answers: list[Answer]
    ) -> tuple[np.ndarray, np.ndarray, list[list[list[int]]]]:
        """The texts' scores, the texts flagged (what "prune" leaves out) and each text's
        flagged words as [start, end] (what "mask" leaves out of the loss)."""
        from distillapp.embeddings import default_cache_dir
        from tasks.extraction.span_quality import FLAGGED_BELOW, flagged_words, span_quality

        quality = span_quality(texts, answers, cache_dir=default_cache_dir())
        scores = quality.text_scores
        return scores, scores < FLAGGED_BELOW, flagged_words(quality)

    def noise_refusal(self, handling: str, kind: str = "finetune") -> str:
        if "weight" in handling and kind != "quick":
            return (
                "The extraction fine-tune takes no per-text weights: choose none or prune "
                "(the quick student takes them)."
            )
        return super().noise_refusal(handling, kind)

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

    def evaluation_context(
        self, metrics: dict, rows: list[dict], texts: dict[int, str], *, teacher_rows: list[dict] = ()
    ) -> dict:
        """The worst gold items (most wrong spans, then the most confident), both sides highlighted."""
        return {
            **measure.worst_texts(rows, texts, marked=self.marked),
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

    @classmethod
    def served_schema(cls) -> dict:
        from tasks.extraction.spans import SERVED_SPAN as span

        return {
            "spans": {
                "type": "array",
                "nullable": True,
                "items": span,
                "description": "Every value found, as character spans; null when the student is unsure "
                "and no fallback answered.",
            },
            "fields": {
                "type": "object",
                "nullable": True,
                "additionalProperties": True,
                "description": "field -> value (a list for a field that takes several values).",
            },
        }

    def drop_in_content(self, value: Answer | None, *, text: str, wants_json: bool = True) -> str:
        """The fields object (``{"date": "12 May", "people": ["4"]}``) as JSON, whatever was asked:
        a client that called an LLM for extraction parses JSON."""
        return json.dumps(self.served(value, text=text)["fields"], ensure_ascii=False)
