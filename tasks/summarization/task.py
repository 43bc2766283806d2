"""The summarisation task: an answer is a short summary of the text, written to a target length.

``{"summary": str}``; a reviewer's answer may add ``"rating"`` (1-5), and a frozen gold item
keeps every reviewer's summary as ``"references"`` beside the final one. The project's
target length (sentences or words) and style guidance are the task's options.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from tasks.base import Answer, AnswerError, Category, OptionField, SyntheticBrief, Task, json_answer

SUMMARY_LIMIT = 100
MAX_SUMMARY_CHARS = 5000
# A prediction counts as right (coverage sweeps, error overlap) at this ROUGE-L F or above
# against its best reference: about where two people's summaries of the same text meet.
RIGHT_FLOOR = 0.4
_SPACE = re.compile(r"\s+")
_LINE_SPACE = re.compile(r"[^\S\n]+")


def _clean(summary: str) -> str:
    """Spaces within a line collapse to one and blank lines go; line breaks stay (an extractive
    summary of a dialogue keeps one turn a line)."""
    lines = (_LINE_SPACE.sub(" ", line).strip() for line in summary.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def _flat(summary: str) -> str:
    return _SPACE.sub(" ", summary).strip()


class SummarizationTask(Task):
    type = "summarization"
    title = "Summarisation"
    category_noun = "topic"
    uses_categories = False
    card_template = "tasks/summarization/card.html"
    evaluation_template = "tasks/summarization/evaluation.html"
    agreement_template = "tasks/summarization/agreement.html"
    score_name = "ROUGE-L"
    right_name = f"share at ROUGE-L ≥ {RIGHT_FLOOR}"
    min_training_categories = 0
    label_column = "answer"
    answer_noun = "summaries"
    import_help = (
        "CSV, TSV, Excel (.xlsx, first sheet) or JSONL with a text column and, optionally, a summary column (name it below); "
        "TXT: one text per line. UTF-8."
    )
    export_about = (
        "Each row carries its current summary as its label, with provenance (proposals, reviews, gold "
        "versions); a gold export adds every reviewer's summary as references."
    )
    option_fields = (
        OptionField(
            "target_unit",
            "Summary length in",
            "choice",
            "sentences",
            choices=(("sentences", "sentences"), ("words", "words")),
        ),
        OptionField(
            "target_length",
            "Summary length",
            "int",
            2,
            help="How long a summary should be, in the unit above: the teacher is asked for it, "
            "reviewers see it, the extractive student selects up to it.",
            min_value=1,
            max_value=500,
        ),
        OptionField(
            "style",
            "Style guidance",
            "text",
            "",
            help="Markdown: who reads the summary and what it must keep (names, amounts, the outcome). "
            "Shown to reviewers and put in the teacher's prompt.",
        ),
    )
    # The fine-tune is extractive on an encoder (the bundled MiniLM) and abstractive on an
    # allowed seq2seq checkpoint (T5, BART): tasks/summarization/finetune.py picks by the model.
    student_kinds = {"finetune": "finetune"}
    score_about = "1.000 would be the reviewers' own wording; people summarising the same text often agree around 0.3 to 0.5"
    # The "likely label errors" order: summaries with the most content the text does not
    # support first (the grounding check; no cross-validated model needed).
    scores_label_errors = True
    label_errors_about = "Summaries with numbers, dates or names their text does not contain score lowest"
    teacher_max_tokens = 300
    default_instructions = (
        "You summarise texts for the task described below. Read the guidelines and the style "
        "guidance, then write one faithful summary: keep the facts that matter, add nothing "
        "the text does not say."
    )

    def __init__(self, categories: list[Category], options: dict | None = None):
        super().__init__(categories, options)
        self.target = {
            "unit": self.options["target_unit"]
            if self.options["target_unit"] in ("words", "sentences")
            else "sentences",
            "length": max(1, int(self.options["target_length"] or 2)),
        }

    def target_words(self) -> str:
        n, unit = self.target["length"], self.target["unit"]
        return f"{n} {unit[:-1] if n == 1 else unit}"

    # --- the answer ---------------------------------------------------------------------

    def validate(self, value: Answer, *, text: str = "") -> Answer:
        if isinstance(value, str):
            value = {"summary": value}
        if not isinstance(value, Mapping) or not isinstance(value.get("summary"), str):
            raise AnswerError('a summarisation answer is {"summary": "<text>"}')
        summary = _clean(value["summary"])
        if not summary:
            raise AnswerError("the summary is empty")
        if len(summary) > MAX_SUMMARY_CHARS:
            raise AnswerError(f"the summary is {len(summary):,} characters, over {MAX_SUMMARY_CHARS:,}")
        answer: dict = {"summary": summary}
        rating = value.get("rating")
        if rating not in (None, ""):
            if isinstance(rating, bool) or not isinstance(rating, (int, str)) or str(rating) not in "12345":
                raise AnswerError("a rating is a whole number from 1 to 5")
            answer["rating"] = int(rating)
        references = value.get("references")
        if references:
            if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
                raise AnswerError("references are a list of summaries")
            answer["references"] = [_clean(r) for r in references if _clean(r)]
        return answer

    def same(self, a: Answer, b: Answer) -> bool:
        if a is None or b is None:
            return a is b
        return _flat(a["summary"]).casefold() == _flat(b["summary"]).casefold()

    def disagree(self, a: Answer, b: Answer) -> bool:
        """Two summaries disagree when they share less than the right floor (ROUGE-L)."""
        from tasks.summarization import measure

        return measure.rouge_l(a["summary"], b["summary"]) < RIGHT_FLOOR

    def summary(self, value: Answer, *, text: str = "") -> str:
        if not value:
            return ""
        line = _flat(value["summary"])
        return line if len(line) <= SUMMARY_LIMIT else line[: SUMMARY_LIMIT - 1] + "…"

    compares_by_preference = True
    # Evaluations add the MiniLM embedding similarity to the references (meaning beside wording).
    EMBEDDING_SIMILARITY = True

    def display(self, value: Answer | None, *, text: str = "") -> str:
        return value["summary"] if value else ""

    def column_answer(self, cell: str, *, text: str) -> Answer:
        return self.validate({"summary": cell}, text=text)

    def file_label(self, answer: Answer | None):
        return answer["summary"] if isinstance(answer, Mapping) else answer

    def file_record(self, record: dict) -> dict:
        """The label as the summary's text (a JSONL export imports again with its label column);
        a gold item's other references follow as ``references``."""
        answer = record.get("label")
        line = {**record, "label": self.file_label(answer)}
        if isinstance(answer, Mapping) and answer.get("references"):
            line["references"] = answer["references"]
        return line

    def gold_answer(self, final: Answer, blind: list[Answer | None]) -> Answer:
        """The final summary, with every reviewer's own summary kept as a reference."""
        if final is None:
            return final
        references = []
        for answer in blind:
            if answer and not self.same(answer, final) and answer["summary"] not in references:
                references.append(answer["summary"])
        return {**final, "references": references} if references else final

    def references(self, gold: Answer) -> list[str]:
        return [gold["summary"], *gold.get("references", [])]

    # --- the teacher --------------------------------------------------------------------

    def prompt_block(self) -> str:
        lines = [f"Write a summary of the text in at most {self.target_words()}."]
        style = (self.options.get("style") or "").strip()
        if style:
            lines += ["", "Style:", style]
        lines += [
            "",
            'Answer with a JSON object and nothing else: {"summary": "<the summary>"}.',
            "Use only facts the text states; do not invent names, numbers or dates.",
        ]
        return "\n".join(lines)

    def response_format(self) -> dict:
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "summarization",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"summary": {"type": "string"}},
                    "required": ["summary"],
                    "additionalProperties": False,
                },
            },
        }

    def parse_teacher(self, content: str | None, *, text: str = "") -> tuple[Answer | None, str]:
        obj, error = json_answer(content)
        if error:
            return None, error
        if not isinstance(obj, dict) or "summary" not in obj:
            return None, f'answer has no "summary" field: {str(content)[:200]!r}'
        try:
            return self.validate({"summary": obj["summary"]}, text=text), ""
        except AnswerError as exc:
            return None, str(exc)

    def example_reply(self, value: Answer, *, text: str = "") -> str:
        return json.dumps({"summary": value["summary"]}, ensure_ascii=False)

    def repair_request(self, reason: str) -> str:
        return f'That answer was invalid ({reason}). Reply with only a JSON object {{"summary": "<the summary>"}}.'

    def logprob_answer(
        self, content: str, value: Answer, tokens: list[tuple[str, float]], *, text: str = ""
    ) -> tuple[Answer, float | None]:
        """The geometric mean probability of the summary's own tokens (the JSON around it is certain)."""
        return value, summary_logprob_confidence(content, tokens)

    def consistency_answer(self, value: Answer, samples: list[Answer | None]) -> tuple[Answer, float]:
        """The sample closest to the others (highest mean ROUGE-L to them), and how much the
        samples agree: their mean pairwise ROUGE-L F (an invalid sample agrees with nothing)."""
        from tasks.summarization import measure

        texts = [s["summary"] if s else "" for s in samples]
        valid = [i for i, s in enumerate(samples) if s]
        if len(texts) < 2 or not valid:
            return value, 1.0 if valid else 0.0

        def closeness(i: int) -> float:
            return sum(measure.rouge_l(texts[i], texts[j]) for j in range(len(texts)) if j != i and texts[j])

        best = max(valid, key=closeness)
        return samples[best], float(measure.mean_pairwise_rouge_l(texts))

    # --- synthetic data -------------------------------------------------------------------

    writes_synthetic = True
    synthetic_about = (
        "The teacher LLM writes new texts about each topic you name, each with its summary; the "
        "summary is stored as the teacher's proposal, to review like any other."
    )
    SYNTHETIC_DIFFICULTY = {
        "easy": "Keep each text simple, with one clear point to summarise.",
        "mixed": "Mix simple texts with a few longer ones that hold several points.",
        "hard": "Write texts where the point that matters is easy to miss, with details a summary must keep.",
    }

    def synthetic_prompt(self, brief: SyntheticBrief) -> str:
        style = (self.options.get("style") or "").strip()
        return "\n".join(
            [
                "You write realistic, varied training examples for a summariser.",
                f"Write {brief.count} new, different texts about {brief.category.name!r}, and for each "
                f"a faithful summary of at most {self.target_words()}.",
                self.SYNTHETIC_DIFFICULTY.get(brief.difficulty, self.SYNTHETIC_DIFFICULTY["mixed"]),
                *(["Summary style:", style] if style else []),
                "A summary states only what its text says: every name, number and date in it occurs in the text.",
                'Each example is a JSON object {"text": <the text>, "summary": <its summary>}.',
            ]
        )

    def synthetic_item_schema(self) -> dict:
        return {
            "type": "object",
            "properties": {"text": {"type": "string"}, "summary": {"type": "string"}},
            "required": ["text", "summary"],
            "additionalProperties": False,
        }

    def synthetic_item(self, item: object, *, brief: SyntheticBrief) -> tuple[str, Answer]:
        """The text and its summary; refused where the summary names something its text lacks."""
        from tasks.summarization import measure

        if not isinstance(item, Mapping) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise AnswerError(
                f'an example is {{"text", "summary"}} with a text, not {json.dumps(item)[:100]}'
            )
        text = item["text"].strip()
        answer = self.validate({"summary": item.get("summary") or ""}, text=text)
        made_up = measure.unsupported(answer["summary"], text)
        if made_up:
            raise AnswerError(
                f"the summary names {', '.join(repr(u['text']) for u in made_up[:3])}, not in its text"
            )
        return text, answer

    # --- the offline teacher --------------------------------------------------------------

    offline_teacher_name = "extractive-centroid-minilm"
    offline_teacher_about = (
        "the offline extractive baseline: it copies the sentences (or dialogue turns) closest to "
        "the text's centre in MiniLM embeddings, up to the target length; it writes no new words"
    )

    def offline_teacher(self, memory: list[tuple[str, Answer]], *, k: int = 10):
        from tasks.summarization.offline import CentroidTeacher

        return CentroidTeacher(self.target)

    # --- people and measuring -----------------------------------------------------------

    def agreement(self, pairs: list[tuple[Answer | None, Answer | None]], *, texts: list[str] = ()) -> dict:
        from tasks.summarization import measure

        return measure.agreement(pairs)

    def metrics(
        self,
        gold: list[Answer],
        predicted: list[Answer | None],
        *,
        texts: list[str] = (),
        confidences=None,
        target_accuracy: float = 0.95,
    ) -> dict:
        from tasks.stats import calibration, wilson_interval
        from tasks.summarization import measure

        metrics = measure.metrics(
            [self.references(g) for g in gold],
            [p["summary"] if p else None for p in predicted],
            texts=list(texts),
            target=self.target,
            embeddings=self.EMBEDDING_SIMILARITY,
        )
        metrics["score"] = metrics.get("rougeL")
        # Right = ROUGE-L at or above the floor: calibration and the coverage sweep measure how
        # often a summary at each confidence is right in that sense.
        right = [None if p is None else self.is_right(g, p) for g, p in zip(gold, predicted, strict=True)]
        count = sum(1 for r in right if r)
        metrics["share_right"] = count / len(right) if right else None
        metrics["share_right_interval"] = wilson_interval(count, len(right))
        metrics.update(
            calibration(
                [True] * len(right),
                right,
                list(confidences or [None] * len(right)),
                bins=10,
                target_accuracy=target_accuracy,
            )
        )
        return metrics

    def is_right(self, gold: Answer, predicted: Answer | None) -> bool:
        from tasks.summarization import measure

        if not predicted:
            return False
        return measure.rouge(self.references(gold), predicted["summary"])["rougeL"] >= RIGHT_FLOOR

    def training_names(self, answers: list[Answer]) -> list[str]:
        return []

    def label_quality_scores(self, texts: list[str], answers: list[Answer]):
        """1 / (1 + the number of numbers, dates and names the summary adds that its text lacks):
        1.0 for a grounded summary, 0.5 with one unsupported item, lower with more."""
        import numpy as np

        from tasks.summarization import measure

        return np.array(
            [
                1.0 / (1 + len(measure.unsupported(a["summary"], t))) if a else 1.0
                for t, a in zip(texts, answers, strict=True)
            ],
            dtype=np.float64,
        )

    unused_training_fields = ("class_weighting",)

    def student_about(self, kind: str, base_models: list[str]) -> str:
        others = ", ".join(base_models)
        return (
            "With the bundled MiniLM (or another encoder), an extractive student: it scores each sentence "
            "or dialogue turn and copies the best up to the target length, trained on the turns that "
            "best match the reviewed and teacher summaries (minutes on a CPU). With a seq2seq "
            "checkpoint (t5-small, flan-t5-base, bart-base) an abstractive student that writes its own "
            "summary (a GPU is advised). "
            + (
                f"This server also allows: {others}; a seq2seq one among them trains the abstractive student."
                if others
                else "This server allows only the bundled MiniLM, so runs here are extractive; the operator "
                "adds a seq2seq checkpoint with DISTILL_STUDENT_BASE_MODELS."
            )
        )

    def student_options(self, kind: str = "finetune") -> dict:
        return {"target": dict(self.target)}

    def stratum(self, value: Answer) -> str:
        return ""

    def review_context(self, text: str, value: Answer | None) -> dict:
        """The card's grounding check: the summary's numbers, dates and names not in the text."""
        from tasks.summarization import measure

        summary = value["summary"] if value else ""
        return {
            "target": self.target_words(),
            "style": self.options.get("style") or "",
            "unsupported": measure.unsupported(summary, text) if summary else [],
        }

    def evaluation_context(
        self, metrics: dict, rows: list[dict], texts: dict[int, str], *, teacher_rows: list[dict] = ()
    ) -> dict:
        """The worst summaries side by side with their reference and the teacher's, lowest ROUGE-L first."""
        from tasks.summarization import measure

        theirs = {r["example"]: r.get("predicted") for r in teacher_rows}
        scored = []
        for row in rows:
            predicted = row.get("predicted")
            if not row.get("gold"):
                continue
            text = texts.get(row["example"], "")
            score = (
                measure.rouge(self.references(row["gold"]), predicted["summary"])["rougeL"]
                if predicted
                else 0.0
            )
            scored.append(
                {
                    "example": row["example"],
                    "text": text,
                    "reference": row["gold"]["summary"],
                    "predicted": predicted["summary"] if predicted else "",
                    "rougeL": score,
                    "teacher": (theirs.get(row["example"]) or {}).get("summary", ""),
                    "unsupported": [u["text"] for u in measure.unsupported(predicted["summary"], text)]
                    if predicted
                    else [],
                }
            )
        scored.sort(key=lambda r: r["rougeL"])
        return {"worst": scored[:10], "right_floor": RIGHT_FLOOR}

    # --- serving ------------------------------------------------------------------------

    def served(self, value: Answer | None, *, text: str = "") -> dict:
        return {"summary": value["summary"] if value else None}

    @classmethod
    def served_schema(cls) -> dict:
        return {
            "summary": {
                "type": "string",
                "nullable": True,
                "description": "The summary; null when the student is unsure and no fallback answered.",
            }
        }

    def drop_in_content(self, value: Answer | None, *, text: str = "", wants_json: bool = False) -> str:
        summary = value["summary"] if value else ""
        return json.dumps({"summary": summary or None}, ensure_ascii=False) if wants_json else summary


def summary_logprob_confidence(content: str, tokens: list[tuple[str, float]]) -> float | None:
    """exp(mean log-prob) of the tokens that spell the summary's string inside the JSON reply."""
    if not tokens:
        return None
    match = re.search(r'"summary"\s*:\s*"', content or "")
    if not match:
        return None
    start = match.end()
    end = start
    while end < len(content) and not (content[end] == '"' and content[end - 1] != "\\"):
        end += 1
    position, chosen = 0, []
    for token, logprob in tokens:
        token_start, position = position, position + len(token)
        if token_start < end and position > start:
            chosen.append(logprob)
    if not chosen:
        return None
    return float(math.exp(sum(chosen) / len(chosen)))
