"""A SIMULATED LLM teacher for Banking77: no LLM is called, nothing here is a measurement of one.

bench/banking77_distill.py uses it to ask "what does a student learn from a teacher that is
as good as gpt-3.5-turbo with 8 shots?" without a network or an API key. The published figure
for that teacher on Banking77 is 81.6 % accuracy; this simulation reproduces exactly that rate
and nothing else about a real LLM:

- given the TRUE labels of a list of texts, it returns "teacher" labels of which exactly
  ``round(n * (1 - accuracy))`` are wrong (so the accuracy is 0.816 up to rounding);
- which examples are wrong is chosen by a ``random.Random(seed)`` sample, so a seed gives the
  same labels on every run and machine;
- a wrong label is never random: it is the label whose NAME is closest to the true label's
  name (cosine similarity of the MiniLM-L6 embeddings from ``distillapp.ml.embed_texts`` of the
  category names with underscores replaced by spaces, e.g. "card arrival"), excluding the true
  label itself.

What it does not reproduce: a real teacher's errors depend on the text (ambiguous or odd texts
are the ones it gets wrong) and spread over several neighbouring intents; this one never looks
at a text, picks the wrong examples uniformly at random and always makes the SAME confusion for
a class (e.g. "card arrival" -> its one nearest name). Its 18.4 % of errors are therefore
systematic label noise, not the noise of a real LLM, and student numbers trained on it say
how the app copes with such noise, not how a real gpt-3.5-turbo teacher would do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

PUBLISHED_ACCURACY = 0.816  # gpt-3.5-turbo, 8-shot, on Banking77 (the published figure)
DEFAULT_SEED = 77


def label_text(name: str) -> str:
    """The category name as words: "card_arrival" -> "card arrival"."""
    return name.replace("_", " ")


def nearest_other_labels(label_names: Sequence[str]) -> dict[str, str]:
    """Each label's nearest OTHER label by MiniLM similarity of the names (ties: first in order)."""
    from distillapp import ml

    names = list(label_names)
    if len(names) < 2:
        raise ValueError("A simulated teacher needs at least two labels to be wrong with.")
    vectors = ml.embed_texts([label_text(n) for n in names])  # L2-normalised rows
    similarity = vectors @ vectors.T
    nearest = {}
    for i, name in enumerate(names):
        row = similarity[i].copy()
        row[i] = -float("inf")
        nearest[name] = names[int(row.argmax())]
    return nearest


def simulate_teacher_labels(
    true_labels: Sequence[str],
    *,
    label_names: Sequence[str],
    accuracy: float = PUBLISHED_ACCURACY,
    seed: int = DEFAULT_SEED,
    nearest: dict[str, str] | None = None,
) -> list[str]:
    """SIMULATED teacher labels: exactly round(n * (1 - accuracy)) of them wrong, as described above.

    `nearest` (from nearest_other_labels) can be passed to avoid embedding the names again.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    nearest = nearest or nearest_other_labels(label_names)
    n = len(true_labels)
    wrong = set(random.Random(seed).sample(range(n), round(n * (1 - accuracy))))
    return [nearest[label] if i in wrong else label for i, label in enumerate(true_labels)]


def accuracy_of(predicted: Sequence[str], truth: Sequence[str]) -> float:
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth differ in length")
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth) if truth else 0.0
