"""The offline classification teacher: a weak but honest embedding classifier, no API key.

Texts, label definitions and reviewed examples are embedded with the bundled MiniLM
(``distillapp.ml.embed_texts``, imported lazily so this module never loads torch itself).
The candidates that vote are every label's prototype (the embedding of ``"name:
description"``) and the ``k`` reviewed memory examples nearest to the text; each votes for
its label with weight ``exp(similarity / temperature)`` and a label's probability is its
share of the votes. Without memory that is the softmax of the prototype similarities
(zero-shot); since every prototype always votes, every label keeps a non-zero probability.
Why this rule and temperature 0.05: bench/README.md, section "Offline teacher".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbeddingPrediction:
    label: str
    confidence: float
    scores: dict[str, float]  # probability per label, summing to 1


def _embed(texts: list[str]) -> np.ndarray:
    from distillapp.ml import embed_texts

    return embed_texts(texts)


class EmbeddingTeacher:
    """Zero-shot from label definitions, few-shot from reviewed examples (see the module docstring).

    ``memory`` is ``[(text, label_name)]``; examples of labels outside the label
    set are ignored. With ``per_label_cap``, only the first that many examples of
    each label are kept, so that a label with many reviewed examples does not
    crowd the neighbours out (pass the memory in order of preference).
    """

    def __init__(
        self,
        labels: Sequence[tuple[str, str]],
        memory: Sequence[tuple[str, str]] = (),
        *,
        k: int = 10,
        temperature: float = 0.05,
        per_label_cap: int | None = None,
    ) -> None:
        if not labels:
            raise ValueError("EmbeddingTeacher needs at least one label.")
        if k < 1 or temperature <= 0:
            raise ValueError("k must be >= 1 and temperature > 0.")
        self.label_names = [name for name, _ in labels]
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError("Label names must be unique.")
        self.k = k
        self.temperature = temperature
        index = {name: i for i, name in enumerate(self.label_names)}
        kept: list[tuple[str, int]] = []
        per_label: defaultdict[int, int] = defaultdict(int)
        for text, label in memory:
            i = index.get(label)
            if i is None or (per_label_cap is not None and per_label[i] >= per_label_cap):
                continue
            per_label[i] += 1
            kept.append((text, i))
        prototypes = [f"{name}: {description}" if description else name for name, description in labels]
        # One call embeds prototypes and memory together; both are kept for every predict().
        vectors = _embed(prototypes + [text for text, _ in kept])
        self._prototypes = vectors[: len(prototypes)]
        self._memory = vectors[len(prototypes) :]
        self._memory_labels = np.array([i for _, i in kept], dtype=np.intp)

    def predict(self, texts: list[str]) -> list[EmbeddingPrediction]:
        if not texts:
            return []
        probabilities = self._probabilities(_embed(list(texts)))
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            predictions.append(
                EmbeddingPrediction(
                    label=self.label_names[best],
                    confidence=float(row[best]),
                    scores={name: float(p) for name, p in zip(self.label_names, row, strict=True)},
                )
            )
        return predictions

    def _probabilities(self, vectors: np.ndarray) -> np.ndarray:
        n = vectors.shape[0]
        prototype_sims = (vectors @ self._prototypes.T).astype(np.float64)
        top = np.max(prototype_sims, axis=1, keepdims=True)
        neighbour_sims = np.empty((n, 0))
        neighbour_labels = np.empty((n, 0), dtype=np.intp)
        if len(self._memory):
            memory_sims = (vectors @ self._memory.T).astype(np.float64)
            k = min(self.k, memory_sims.shape[1])
            nearest = np.argpartition(-memory_sims, k - 1, axis=1)[:, :k]
            neighbour_sims = np.take_along_axis(memory_sims, nearest, axis=1)
            neighbour_labels = self._memory_labels[nearest]
            top = np.maximum(top, neighbour_sims.max(axis=1, keepdims=True))
        # Subtracting the row maximum keeps exp() finite; it cancels in the ratio.
        votes = np.exp((prototype_sims - top) / self.temperature)
        rows = np.repeat(np.arange(n), neighbour_labels.shape[1])
        np.add.at(
            votes, (rows, neighbour_labels.ravel()), np.exp((neighbour_sims - top) / self.temperature).ravel()
        )
        return votes / votes.sum(axis=1, keepdims=True)


class OfflineClassifier:
    """The task seam's offline teacher (``Task.offline_teacher``) over an EmbeddingTeacher."""

    name = "embedding-minilm"
    confidence_method = "softmax"

    def __init__(self, teacher: EmbeddingTeacher):
        self.teacher = teacher

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        return [(p.label, p.confidence) for p in self.teacher.predict(list(texts))]
