"""The classification task: an answer is one label name of the project's label set.

The teacher answers ``{"label": <one of the names>}`` in a JSON schema with the names as
an enum; agreement is Cohen's kappa; the metrics are accuracy, per-class and averaged
precision/recall/F1, the confusion matrix, calibration and the coverage sweep.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import TYPE_CHECKING

from tasks.base import Answer, AnswerError, SyntheticBrief, Task, json_answer
from tasks.stats import bootstrap_macro_f1, calibration, wilson_interval

if TYPE_CHECKING:
    import numpy as np


class ClassificationTask(Task):
    type = "classification"
    title = "Classification"
    category_noun = "label"
    scores_label_errors = True
    handles_label_noise = True
    card_template = "tasks/classification/card.html"
    evaluation_template = "tasks/classification/evaluation.html"
    agreement_template = "tasks/classification/agreement.html"
    score_name = "accuracy"
    # One label is nothing to tell apart.
    min_training_categories = 2
    student_kinds = {"finetune": "student", "quick": "quick", "ensemble": "ensemble"}
    score_about = "1.000 would be every gold item right"
    training_field_help = {
        "C": "Larger fits the labels more closely, smaller generalises more; 10 measured best on Banking77.",
    }

    def student_about(self, kind: str, base_models: list[str]) -> str:
        return {
            "quick": (
                "Embeds each text once with the frozen base model and fits a logistic regression: "
                "seconds, and as accurate as the fine-tune on short texts with many labels (Banking77: "
                "0.929 against 0.923). Use it to seed, to order review and to compare label sources."
            ),
            "ensemble": (
                "Averages a fine-tune's and a quick student's probabilities, with the weight chosen on "
                "their validation split: the most accurate when both exist (Banking77: 0.935)."
            ),
        }.get(kind, "")

    def default_hyperparameters(self, kind: str = "finetune") -> dict:
        if kind == "quick":
            from tasks.classification.quick import DEFAULT_C

            # It embeds once and fits a head: no epochs or learning rate. Texts are cut at
            # 128 tokens, the length the base model was trained to embed.
            return {"C": DEFAULT_C, "max_length": 128}
        if kind == "finetune":
            # Off by default (human labels); the advice turns it on where teacher labels are
            # trained on (training/services/advice.py).
            return {"label_smoothing": 0.0}
        return {}

    def label_quality_scores(self, texts: list[str], answers: list[Answer]) -> np.ndarray:
        from tasks.classification.label_quality import label_quality_scores

        return label_quality_scores(texts, answers)

    def label_quality(self, texts: list[str], answers: list[Answer]) -> tuple[np.ndarray, np.ndarray]:
        from tasks.classification.label_quality import label_quality

        return label_quality(texts, answers)

    def validate(self, value: Answer, *, text: str = "") -> Answer:
        if not isinstance(value, str) or value.strip() not in self.names:
            raise AnswerError(f"{value!r} is not one of the project's labels ({', '.join(self.names)})")
        return value.strip()

    def summary(self, value: Answer, *, text: str = "") -> str:
        return "" if value is None else str(value)[:100]

    # --- the teacher --------------------------------------------------------------------

    def prompt_block(self) -> str:
        lines = ["Labels:"]
        for category in self.categories:
            description = (category.description or "").strip()
            lines.append(f"- {category.name}" + (f": {description}" if description else ""))
        lines += ["", f'Answer with a JSON object and nothing else: {{"label": <one of {self._enum()}>}}.']
        return "\n".join(lines)

    def _enum(self) -> str:
        return ", ".join(json.dumps(name) for name in self.names)

    def response_format(self) -> dict:
        return response_format(self.names)

    def parse_teacher(self, content: str | None, *, text: str = "") -> tuple[Answer | None, str]:
        return parse_label(content, self.names)

    def example_reply(self, value: Answer, *, text: str = "") -> str:
        return json.dumps({"label": value})

    def repair_request(self, reason: str) -> str:
        return f'That answer was invalid ({reason}). Reply with only a JSON object {{"label": <one of {self._enum()}>}}.'

    def logprob_confidence(
        self, content: str, value: Answer, tokens: list[tuple[str, float]]
    ) -> float | None:
        return logprob_confidence(content, value, tokens)

    def logprob_answer(
        self, content: str, value: Answer, tokens: list[tuple[str, float]], *, text: str = ""
    ) -> tuple[Answer, float | None]:
        return value, logprob_confidence(content, value, tokens)

    # --- the offline teacher and synthetic data -------------------------------------------

    writes_synthetic = True
    synthetic_about = (
        "The teacher LLM writes new texts per label; the label is stored as the teacher's proposal."
    )
    SYNTHETIC_DIFFICULTY = {
        "easy": "Make each example clearly and typically about this label.",
        "mixed": "Mix clear examples with a few that are harder to classify.",
        "hard": "Write near-misses: examples that look like they could belong to {confusable} "
        "but still belong to this label.",
    }

    def synthetic_prompt(self, brief: SyntheticBrief) -> str:
        label = brief.category
        others = "\n".join(
            f"- {c.name}: {c.description}".rstrip(": ") for c in self.categories if c.name != label.name
        )
        difficulty = self.SYNTHETIC_DIFFICULTY.get(brief.difficulty, self.SYNTHETIC_DIFFICULTY["mixed"])
        return "\n".join(
            [
                "You write realistic, varied training examples for a text classifier.",
                f"Write {brief.count} new, different texts that belong to the label {label.name!r}"
                + (f" ({label.description})" if label.description else "")
                + ".",
                difficulty.format(confusable=" or ".join(brief.confusable) or "another label"),
                "Never write a text that belongs to one of the other labels:",
                others or "- (none)",
                "Each example is the text itself, as a JSON string.",
            ]
        )

    def synthetic_item_schema(self) -> dict:
        return {"type": "string"}

    def synthetic_item(self, item: object, *, brief: SyntheticBrief) -> tuple[str, Answer]:
        if not isinstance(item, str) or not item.strip():
            raise AnswerError(f"an example is a non-empty text, not {json.dumps(item)[:100]}")
        return item.strip(), brief.category.name

    offline_teacher_name = "embedding-minilm"
    offline_teacher_about = (
        "the offline embedding teacher: it compares each text with the label descriptions "
        "(MiniLM embeddings) and, under the few-shot setting, with reviewed or fixed examples"
    )

    def offline_teacher(self, memory: list[tuple[str, Answer]], *, k: int = 10):
        from tasks.classification.offline import EmbeddingTeacher, OfflineClassifier

        labels = [(c.name, c.description) for c in self.categories]
        return OfflineClassifier(EmbeddingTeacher(labels, memory, k=k))

    # --- people and measuring -----------------------------------------------------------

    def agreement(self, pairs: list[tuple[Answer | None, Answer | None]], *, texts: list[str] = ()) -> dict:
        return agreement([(REJECTED if a is None else a, REJECTED if b is None else b) for a, b in pairs])

    def metrics(
        self,
        gold: list[Answer],
        predicted: list[Answer | None],
        *,
        texts: list[str] = (),
        confidences=None,
        target_accuracy: float = 0.95,
    ) -> dict:
        metrics = classification_metrics(
            gold,
            predicted,
            list(confidences or [None] * len(gold)),
            self.names,
            target_accuracy=target_accuracy,
        )
        metrics["score"] = metrics.get("accuracy")
        return metrics

    def training_names(self, answers: list[Answer]) -> list[str]:
        # The labels the data has: a label with no example would be a class never seen.
        return sorted(set(answers))

    def stratum(self, value: Answer) -> str:
        return value

    def category_counts(self, answers: list[Answer]) -> dict[str, int]:
        return dict(sorted(Counter(answers).items()))

    def is_right(self, gold: Answer, predicted: Answer | None) -> bool:
        return predicted is not None and gold == predicted

    def evaluation_context(
        self, metrics: dict, rows: list[dict], texts: dict[int, str], *, teacher_rows: list[dict] = ()
    ) -> dict:
        """The confusion heat-map (tasks/classification/heatmap.py)."""
        from tasks.classification.heatmap import heatmap

        return heatmap(metrics.get("confusion", {}))

    # --- serving ------------------------------------------------------------------------

    def answer_categories(self, answer: Answer) -> set[str]:
        return {answer} if answer else set()

    def rename_category(self, answer: Answer, old: str, new: str) -> Answer:
        return new if answer == old else answer

    def answers_naming(self, field: str, name: str) -> dict:
        return {field: name}  # the answer is the label's name

    def served(self, value: Answer | None, *, text: str = "") -> dict:
        return {"label": value}

    @classmethod
    def served_schema(cls) -> dict:
        return {
            "label": {
                "type": "string",
                "nullable": True,
                "description": "The label; null when the student is unsure and no fallback answered.",
            }
        }

    def drop_in_content(self, value: Answer | None, *, text: str = "", wants_json: bool = False) -> str:
        return json.dumps({"label": value}) if wants_json else value


# A blind "no label fits" is one more category for kappa (the gold pages show it so too).
REJECTED = "(reject)"


def response_format(labels: list[str]) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "classification",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": labels}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }


def parse_label(content: str | None, labels: list[str]) -> tuple[str | None, str]:
    """(label, "") for a valid answer, else (None, the reason)."""
    obj, error = json_answer(content)
    if error:
        return None, error
    if not isinstance(obj, dict) or "label" not in obj:
        return None, f'answer has no "label" field: {content[:200]!r}'
    label = obj["label"]
    if not isinstance(label, str) or not label.strip():
        return None, "answer has an empty label"
    if label.strip() not in labels:
        return None, f"label {label!r} is not one of the project's labels"
    return label.strip(), ""


def logprob_confidence(content: str, label: str, tokens: list[tuple[str, float]]) -> float | None:
    """Probability of the label's own tokens in the answer, from their logprobs.

    The tokens overlapping the label's characters inside the JSON answer are
    the ones that chose it; the JSON punctuation around them is certain and
    says nothing about the choice.
    """
    if not tokens:
        return None
    start = content.find(json.dumps(label)[:-1])  # the opening quote and the label
    if start < 0:
        return None
    start += 1
    end = start + len(label)
    position, total, matched = 0, 0.0, False
    for token, logprob in tokens:
        token_end = position + len(token)
        if token_end > start and position < end:
            total += logprob
            matched = True
        position = token_end
    if not matched or position != len(content):
        # The tokens do not spell the content: no honest number to give.
        return None
    return max(0.0, min(1.0, math.exp(total)))


def agreement(pairs: list[tuple[str, str]]) -> dict:
    """Cohen's kappa between the two blind labels, overall and per label (one vs rest).

    A reject (REJECTED, "no label fits") is one more category.
    """
    from sklearn.metrics import cohen_kappa_score

    if not pairs:
        return {"pairs": 0, "kappa": None, "observed": None, "per_label": {}}
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    observed = sum(a == b for a, b in pairs) / len(pairs)
    kappa = float(cohen_kappa_score(first, second)) if len(set(first) | set(second)) > 1 else 1.0
    per_label = {}
    for label in sorted(set(first) | set(second)):
        a = [x == label for x in first]
        b = [x == label for x in second]
        per_label[label] = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else 1.0
    return {"pairs": len(pairs), "kappa": kappa, "observed": observed, "per_label": per_label}


def classification_metrics(
    golds: list[str],
    preds: list[str | None],
    confidences: list[float | None],
    labels: list[str],
    *,
    target_accuracy: float = 0.95,
    bins: int = 10,
) -> dict:
    """Accuracy, per-class and averaged P/R/F1, confusion matrix, calibration, coverage sweep.

    A missing prediction (None) counts as wrong; confidence-based numbers use
    only the predictions that came with a confidence.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    n = len(golds)
    if n == 0:
        return {"examples": 0}
    # A gold label the project no longer has (renamed since) still counts.
    labels = list(labels) + sorted(set(golds) - set(labels))
    shown = [p if p is not None else "(none)" for p in preds]
    names = list(labels) + (["(none)"] if "(none)" in shown else [])
    precision, recall, f1, support = precision_recall_fscore_support(
        golds, shown, labels=labels, zero_division=0
    )
    averages = {}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            golds, shown, labels=labels, average=average, zero_division=0
        )
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    matrix = confusion_matrix(golds, shown, labels=names)
    confusions = Counter((g, p) for g, p in zip(golds, shown, strict=True) if g != p)
    accuracy = float(accuracy_score(golds, shown))
    metrics = {
        "examples": n,
        "accuracy": accuracy,
        "accuracy_interval": wilson_interval(sum(g == p for g, p in zip(golds, shown, strict=True)), n),
        "macro_f1_interval": bootstrap_macro_f1(golds, preds, labels),
        "per_class": [
            {
                "label": label,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        ],
        **{f"{k}_avg": v for k, v in averages.items()},
        "confusion": {"labels": names, "matrix": matrix.tolist()},
        "top_confusions": [
            {"true": g, "predicted": p, "count": c} for (g, p), c in confusions.most_common(25)
        ],
        "missing_predictions": sum(p is None for p in preds),
    }
    metrics.update(calibration(golds, preds, confidences, bins=bins, target_accuracy=target_accuracy))
    return metrics
