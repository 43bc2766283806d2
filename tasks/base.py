"""What every task type answers to: the seam between shared code and task-specific code.

Shared code (import, teacher, review, gold, training, evaluation, serving) holds a
project's ``Task`` (``project.task``) and asks it everything that depends on what an
answer *is*. It never looks inside an answer itself: for classification an answer is a
label name, for extraction a set of character spans, for summarisation (later) a text.

A task module works on plain values (strings, dicts, lists) and its ``Category`` list;
it imports nothing from ``annotation`` or ``training`` (the layers above it), and torch
only through ``distillapp.ml``, lazily.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

Answer = Any  # JSON-serialisable; its shape belongs to the task type.


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def json_answer(content: str | None) -> tuple[Any, str]:
    """(the JSON value of an LLM's answer, "") or (None, why not); code fences are tolerated."""
    if content is None or not content.strip():
        return None, "empty answer"
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text), ""
    except json.JSONDecodeError:
        return None, f"answer is not valid JSON: {content[:200]!r}"


class AnswerError(ValueError):
    """An answer that does not fit the task or its categories; the message says why."""


class AnswerFileError(ValueError):
    """Lines of an answer file that cannot be read; ``errors`` lists (line, reason)."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(f"line {line}: {reason}" for line, reason in self.errors[:5]))


@dataclass
class FileRow:
    """One row of an answer file (``Task.read_answer_chunk``); ``line`` counts from the chunk's first."""

    line: int
    text: str
    answer: Any = None  # None: the row has no answer
    external_id: str = ""
    metadata: dict | None = None
    notes: dict | None = None  # counts of how the answer was read (``Task.answer_note_names``)


@dataclass(frozen=True)
class Category:
    """A label (classification) or a field (extraction): what an answer may name."""

    name: str
    description: str = ""
    key: str = ""
    color: str = ""
    allows_many: bool = True  # extraction: may a text hold several values of this field?


@dataclass(frozen=True)
class OptionField:
    """One project-level setting a task type reads (summarisation's target length and style).

    The project form builds a field from it; the value is kept in ``Project.task_options``
    and reaches the task as ``task.options[name]``.
    """

    name: str
    label: str
    kind: str  # "int", "choice" or "text"
    default: Any
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    min_value: int | None = None
    max_value: int | None = None


@dataclass(frozen=True)
class SyntheticBrief:
    """One call of the synthetic-data job: write ``count`` texts for ``category``."""

    category: Category
    count: int
    difficulty: str = "mixed"  # "easy", "mixed" or "hard" (SyntheticJob.Difficulty)
    # The other categories whose definitions are closest to this one (for near-misses).
    confusable: tuple[str, ...] = ()
    # Varies what a task asks from call to call (extraction: which other fields to mention).
    seed: int = 0


class Task(ABC):
    """One task type, bound to one project's categories."""

    type: ClassVar[str]
    title: ClassVar[str]
    category_noun: ClassVar[str] = "label"  # "label" or "field", for pages and messages
    # Can the review queue score likely annotation errors (``label_quality_scores``: cleanlab
    # over cross-validated probabilities) for this task yet?
    scores_label_errors: ClassVar[bool] = False
    label_errors_about: ClassVar[str] = "Cross-validated on MiniLM embeddings (cleanlab)"
    # Can its runs leave out the labels those scores flag and weight the rest by the teacher's
    # confidence (the launch form's noise handling)? Needs a student that takes weights.
    handles_label_noise: ClassVar[bool] = False
    # The noise handling the launch form advises where unreviewed teacher labels are trained on
    # (training.services.advice), measured per task type with bench/review_budget_bench.py.
    advised_noise_handling: ClassVar[str] = "prune"
    # Can its runs leave the flagged parts of a label out of the loss (noise handling "mask"):
    # ``label_quality_parts`` gives the parts and the student's ``train`` takes ``ignore``.
    masks_label_noise: ClassVar[bool] = False
    # The review card's body and the blind gold card, as template partials.
    card_template: ClassVar[str]
    # The task's part of the evaluation page (included with ``m``, the metrics, in context).
    evaluation_template: ClassVar[str]
    # The gold page's agreement figures (partials ``stats`` and ``details``, ``agreement`` in context).
    agreement_template: ClassVar[str]
    # What ``metrics["score"]`` is, for pages and messages ("accuracy", "strict F1").
    score_name: ClassVar[str] = "score"
    # What 1.000 of that score would mean, for the sentence under it on the evaluation page.
    score_about: ClassVar[str] = "1.000 is the best"
    # What the coverage sweep measures at each threshold: the share of answers wholly right.
    right_name: ClassVar[str] = "accuracy"
    # A training set needs answers naming at least this many categories.
    min_training_categories: ClassVar[int] = 1
    # Does a project of this type have categories (labels, fields) at all? A summary names none.
    uses_categories: ClassVar[bool] = True
    # Project-level settings of this task type (``Project.task_options``).
    option_fields: ClassVar[tuple[OptionField, ...]] = ()
    # Files. What an import's label column holds: "category" (a label name), "answer" (the
    # answer itself, read by ``column_answer``) or "" (no label column: the formats in
    # ``answer_formats`` carry the answers and ``read_answers`` reads them).
    label_column: ClassVar[str] = "category"
    import_formats: ClassVar[tuple[str, ...]] = ("csv", "tsv", "jsonl", "txt", "xlsx")
    answer_formats: ClassVar[tuple[str, ...]] = ()
    answer_files_about: ClassVar[str] = ""  # how those files give answers, for messages
    answer_noun: ClassVar[str] = "labels"  # what a file's answers are called on the import form
    import_help: ClassVar[str] = ""  # the import form's help for the file, where the default does not fit
    export_about: ClassVar[str] = (
        "Each row carries its current label and provenance (proposals, reviews, gold versions)."
    )
    # The formats an export offers; those beyond CSV and JSONL are written by ``write_file``.
    export_formats: ClassVar[tuple[str, ...]] = ("csv", "jsonl")

    def __init__(self, categories: list[Category], options: dict | None = None):
        self.categories = list(categories)
        self.names = [c.name for c in self.categories]
        self.options = {f.name: f.default for f in self.option_fields}
        self.options.update({k: v for k, v in (options or {}).items() if k in self.options})

    # --- the answer ---------------------------------------------------------------------

    @abstractmethod
    def validate(self, value: Answer, *, text: str) -> Answer:
        """The answer in its normal form, or AnswerError saying what is wrong."""

    def same(self, a: Answer, b: Answer) -> bool:
        """Do two (normalised) answers say the same thing?"""
        return a == b

    def disagree(self, a: Answer, b: Answer) -> bool:
        """Do two answers (the teacher's, the student's) differ enough to review first?"""
        return not self.same(a, b)

    # What a reviewer's answer can show wrong in a proposal (``error_kinds``), for the
    # review-value page: kind -> what it means.
    error_kind_names: ClassVar[dict[str, str]] = {"wrong": "a wrong answer"}

    def error_kinds(self, proposed: Answer, final: Answer | None, *, text: str) -> dict[str, int]:
        """How many errors of each kind the reviewer's answer (None: rejected) shows in the
        proposed one. Here: one wrong answer unless they are the same."""
        return {"wrong": int(final is None or not self.same(proposed, final))}

    # The order the review queue's "auto" serves while the label-quality flags do not cover
    # most of the teacher's errors (annotation.review.next_card.auto_strategy): "confidence"
    # (lowest teacher confidence first) or "disagreement" (highest ``review_risk`` first).
    auto_order: ClassVar[str] = "confidence"

    def review_risk(self, teacher: Answer | None, student: Answer | None, *, text: str) -> float:
        """How strongly the teacher's answer looks wrong, in [0, 1] (0: no sign): the
        "disagreement" order serves the highest first, ties by lowest teacher confidence.
        Here: 1 where the student's answer disagrees (``disagree``)."""
        if teacher is None or student is None:
            return 0.0
        return 1.0 if self.disagree(teacher, student) else 0.0

    @abstractmethod
    def summary(self, value: Answer, *, text: str = "") -> str:
        """A short one-line form (queue columns, tables); never parsed back."""

    def answer_categories(self, answer: Answer) -> set[str]:
        """The category names an answer uses (an import checks them; renaming one rewrites them)."""
        return set()

    def rename_category(self, answer: Answer, old: str, new: str) -> Answer:
        """The answer with category ``old`` called ``new``."""
        return answer

    def answers_naming(self, field: str, name: str) -> dict:
        """A database filter (on the JSON answer ``field``) that holds at least every answer
        naming ``name``; ``answer_categories`` then decides. Default: every non-empty answer."""
        return {f"{field}__isnull": False}

    def column_answer(self, cell: str, *, text: str) -> Answer:
        """The answer an import's label column holds (``label_column == "answer"``), or AnswerError."""
        raise NotImplementedError(f"{self.title} reads no answers from a label column")

    def shift_answer(self, answer: Answer, shift: int) -> Answer:
        """The answer for its text with ``shift`` leading characters stripped (offsets move)."""
        return answer

    def file_record(self, record: dict) -> dict:
        """An export record as a JSONL line of this task writes it (the label in its file form)."""
        return record

    def file_label(self, answer: Answer | None) -> Any:
        """The answer as a CSV cell or JSONL ``label`` shows it; importing it again gives it back."""
        return answer

    def read_answer_chunk(self, lines: list[str], *, fmt: str, skip) -> list[FileRow]:
        """The rows of consecutive lines of a file in one of ``answer_formats`` (a chunk ends
        at a record boundary), each with its answer checked against its text but not yet
        against the categories; AnswerFileError lists the lines that cannot be read. `skip`
        names keys an export writes for provenance, not to be kept as metadata."""
        raise NotImplementedError(f"{self.title} reads no answer files")

    def write_file(self, fmt: str, records):
        """Export chunks in a format beyond CSV and JSONL (``export_formats``)."""
        raise NotImplementedError(f"{self.title} writes no {fmt} files")

    def gold_answer(self, final: Answer, blind: list[Answer | None]) -> Answer:
        """The answer a gold item keeps, from the final one and the blind answers it came from
        (summarisation keeps every reviewer's summary as a reference)."""
        return final

    # Reading an answer may leave a choice the project's reviewed answers settle (where a
    # value the text holds twice sits): ``with_reviewed`` primes a copy of the task with them.
    learns_from_reviewed: ClassVar[bool] = False

    def with_reviewed(self, reviewed: list[tuple[str, Answer]]) -> Task:
        """This task primed with reviewed ``(text, answer)`` pairs. Here: itself."""
        return self

    # What ``answer_notes`` counts, for the import and teacher pages: key -> what it means.
    answer_note_names: ClassVar[dict[str, str]] = {}

    def answer_notes(self, answer: Answer, *, text: str) -> dict[str, int]:
        """Counts worth telling about an answer as it was read (extraction: values placed at
        one of several occurrences, and by which rule)."""
        return {}

    # --- the teacher --------------------------------------------------------------------

    @abstractmethod
    def prompt_block(self) -> str:
        """The categories and the answer format, as the system prompt states them."""

    @abstractmethod
    def response_format(self) -> dict:
        """The JSON schema the LLM answers in (OpenAI ``response_format``)."""

    @abstractmethod
    def parse_teacher(self, content: str | None, *, text: str) -> tuple[Answer | None, str]:
        """(answer, "") for a valid LLM answer, else (None, the reason: recorded as an error)."""

    @abstractmethod
    def example_reply(self, value: Answer, *, text: str) -> str:
        """How a few-shot example's answer is written as the assistant's reply."""

    def repair_request(self, reason: str) -> str:
        """What the user says after an invalid answer, asking once for a valid one."""
        return f"That answer was invalid ({reason}). Reply with only the JSON object asked for."

    def logprob_answer(
        self, content: str, value: Answer, tokens: list[tuple[str, float]], *, text: str
    ) -> tuple[Answer, float | None]:
        """The answer, with the confidence of each of its parts where it has parts (an extraction
        answer's spans), and its text-level confidence, from the reply tokens' log-probs
        (``tokens`` spell ``content``); the confidence is None where the task cannot tell."""
        return value, None

    def consistency_answer(self, value: Answer, samples: list[Answer | None]) -> tuple[Answer, float]:
        """Like ``logprob_answer``, from k sampled answers (None: a sample that was invalid):
        ``value`` is the most common of them. Here: the share of samples that say the same."""
        return value, sum(s is not None and self.same(s, value) for s in samples) / len(samples)

    # The labelling job's defaults: the prompt's opening instructions and the answer's
    # token budget (a span list needs more room than one label).
    default_instructions: ClassVar[str] = (
        "You label texts for the task described below. Read the guidelines and the label "
        "definitions, then give the single label that fits the text best."
    )
    teacher_max_tokens: ClassVar[int] = 64

    # --- synthetic data -----------------------------------------------------------------
    #
    # The synthetic-data job asks the LLM for a batch of new examples written for one
    # category (a label; a field), as ``{"examples": [<item>, ...]}``. The job adds the
    # style (persona, tone, length, noise), the guidelines and seed texts; the task says
    # what to write and in what shape, and turns each item into a ``(text, answer)``.

    # Can the synthetic-data job write texts for this task type? What it writes, for pages.
    writes_synthetic: ClassVar[bool] = False
    synthetic_about: ClassVar[str] = ""

    def synthetic_prompt(self, brief: SyntheticBrief) -> str:
        """The task's part of the writer's system prompt: what to write for ``brief.category``,
        how hard, and what each example (one item of the reply's list) is."""
        raise NotImplementedError(f"{self.title} cannot write synthetic examples")

    def synthetic_item_schema(self) -> dict:
        """The JSON schema of one item (the reply's ``examples`` array holds them)."""
        raise NotImplementedError(f"{self.title} cannot write synthetic examples")

    def synthetic_item(self, item: object, *, brief: SyntheticBrief) -> tuple[str, Answer]:
        """One written item as ``(text, answer)``, or AnswerError saying why it is refused."""
        raise NotImplementedError(f"{self.title} cannot write synthetic examples")

    # --- the offline teacher (no API key) -----------------------------------------------

    # Its name (in the agent, "teacher:<name>:prompt-vN") and one sentence for the pages.
    offline_teacher_name: ClassVar[str] = ""
    offline_teacher_about: ClassVar[str] = ""
    # True: it answers from the category descriptions alone and follows the prompt's
    # few-shot setting; False: it learns only from examples, so it always gets every
    # reviewed example and the fixed ones.
    offline_teacher_zero_shot: ClassVar[bool] = True

    def offline_teacher(self, memory: list[tuple[str, Answer]], *, k: int = 10):
        """A teacher that needs no API key, from reviewed ``(text, answer)`` pairs.

        It has ``confidence_method`` and ``predict(texts) -> [(answer, confidence)]``.
        """
        raise NotImplementedError(f"{self.title} has no offline teacher")

    # --- people -------------------------------------------------------------------------

    @abstractmethod
    def agreement(self, pairs: list[tuple[Answer | None, Answer | None]], *, texts: list[str]) -> dict:
        """Agreement of two blind annotators over the same items (None = rejected)."""

    # --- measuring ----------------------------------------------------------------------

    @abstractmethod
    def metrics(self, gold: list[Answer], predicted: list[Answer | None], *, texts: list[str]) -> dict:
        """The metric set on a gold set: the headline number is ``metrics["score"]``."""

    @abstractmethod
    def is_right(self, gold: Answer, predicted: Answer | None) -> bool:
        """Is this prediction wholly right (for coverage sweeps and error overlap)?"""

    def label_quality_scores(self, texts: list[str], answers: list[Answer]) -> np.ndarray:
        """One score per (text, its current answer) in [0, 1], float64: lower = the answer is
        more likely wrong (the review queue's "likely label errors" order), computed out of
        sample (no answer vouches for itself) with cleanlab. Task types with
        ``scores_label_errors`` implement it."""
        raise NotImplementedError(f"{self.title} cannot score label errors")

    def label_quality(self, texts: list[str], answers: list[Answer]) -> tuple[np.ndarray, np.ndarray | None]:
        """``label_quality_scores`` and which answers are likely errors (bool each), the set a
        run's "prune" noise handling leaves out; None where the task type does not decide
        (training then flags a score below 0.5)."""
        return self.label_quality_scores(texts, answers), None

    def label_quality_parts(
        self, texts: list[str], answers: list[Answer]
    ) -> tuple[np.ndarray, np.ndarray | None, list | None]:
        """``label_quality`` and, where the task can mask (``masks_label_noise``), each
        answer's flagged parts (JSON in the task's own shape: what its student's
        ``train(ignore=...)`` takes; an empty list where nothing is flagged); else None."""
        scores, issues = self.label_quality(texts, answers)
        return scores, issues, None

    def noise_refusal(self, handling: str, kind: str = "finetune") -> str:
        """Why a run of `kind` cannot take this noise handling ("" where it can)."""
        if handling != "none" and not self.handles_label_noise:
            return f"{self.title} runs have no noise handling yet: choose none."
        if "mask" in handling and not self.masks_label_noise:
            return (
                f"{self.title} labels have no parts to leave out of the loss: choose none, prune or weight."
            )
        return ""

    def training_names(self, answers: list[Answer]) -> list[str]:
        """The names the student's head is built for, given its training answers."""
        return list(self.names)

    def student_answer(self, value: Answer, *, text: str) -> Answer:
        """A student's raw prediction as an answer ``validate`` accepts (confidences kept)."""
        return value

    def stratum(self, value: Answer) -> str:
        """A hashable key that groups similar answers, for a stratified validation split."""
        return self.summary(value)

    def category_counts(self, answers: list[Answer]) -> dict[str, int]:
        """How often each category occurs in these answers (training-set counts, drift)."""
        return {}

    # Does the evaluation page offer blind A/B judging of student against teacher (people
    # decide where an overlap metric says little: summaries)?
    compares_by_preference: ClassVar[bool] = False

    def display(self, value: Answer | None, *, text: str = "") -> str:
        """The whole answer as people read it on a page (``summary`` is the one-line form)."""
        return self.summary(value, text=text)

    def review_context(self, text: str, value: Answer | None) -> dict:
        """What the review card adds for this text and answer (summarisation: the grounding check)."""
        return {}

    def evaluation_context(
        self, metrics: dict, rows: list[dict], texts: dict[int, str], *, teacher_rows: list[dict] = ()
    ) -> dict:
        """Extra context for ``evaluation_template`` from an evaluation's metrics and rows
        (``{"example", "gold", "predicted", "confidence"}``); `texts` maps example id to text;
        `teacher_rows` are the teacher's rows on the same gold version, where it was measured."""
        return {}

    # Run kind -> the module in this task's package that trains and serves that kind of
    # student (train, predict, predict_proba, export_onnx, predict_onnx). Every task type has
    # a fine-tune; classification adds the quick student and the ensemble of two runs.
    student_kinds: dict[str, str] = {"finetune": "student"}

    def student_for(self, kind: str):
        """The student module of this run kind (``TrainingRun.kind``)."""
        from importlib import import_module

        if kind not in self.student_kinds:
            raise ValueError(
                f"{self.title} has no {kind!r} student (it has {', '.join(self.student_kinds)})."
            )
        return import_module(f"{type(self).__module__.rpartition('.')[0]}.{self.student_kinds[kind]}")

    @property
    def student(self):
        """The task type's fine-tuned student module: train, predict, export_onnx, predict_onnx."""
        return self.student_for("finetune")

    # Launch-form fields this task type's students have no use for.
    unused_training_fields: ClassVar[tuple[str, ...]] = ()
    # What a launch-form field means for this task type's students, over the shared wording
    # (the quick student's C: the value measured best on this type's benchmark).
    training_field_help: ClassVar[dict[str, str]] = {}

    def student_about(self, kind: str, base_models: list[str]) -> str:
        """What a run kind trains for this task type, and which of the operator's base models
        it can use; "" for the shared wording."""
        return ""

    def student_options(self, kind: str = "finetune") -> dict:
        """What this task type's students take beyond the shared arguments (summarisation: the
        project's target length)."""
        return {}

    def default_hyperparameters(self, kind: str = "finetune") -> dict:
        """This task type's launch-form defaults for a run kind, over the shared ones
        (training.models.default_hyperparameters)."""
        return {}

    # --- serving ------------------------------------------------------------------------

    @abstractmethod
    def served(self, value: Answer | None, *, text: str) -> dict:
        """The task-specific fields of one prediction in the API's response."""

    @classmethod
    @abstractmethod
    def served_schema(cls) -> dict:
        """The OpenAPI 3.0 properties of ``served``'s fields (``nullable`` for the unsure answer),
        each with a description."""

    def drop_in_content(self, value: Answer | None, *, text: str, wants_json: bool) -> str:
        """The assistant message of the OpenAI-compatible drop-in for this answer."""
        return json.dumps(self.served(value, text=text), ensure_ascii=False)
