"""The offline summarisation teacher: the units nearest the text's centroid, no API key.

Each text is cut into units (``units.split_units``: turns or sentences) and each unit is
embedded with the bundled MiniLM; the text's centroid is the mean of its unit vectors.
The units most similar to it stand for what the text is mostly about: they are taken,
most similar first, up to the target length (``units.fit_to_target``) and joined in
document order. It knows nothing of what a summary should say beyond "central", so it is
a weak teacher (it never rewrites, and a dialogue's central turn is not always its
point), but it runs anywhere.

Confidence: the margin between the least similar unit kept and the most similar one left
out, squashed by a logistic of scale ``MARGIN_SCALE``: 0.5 when the two tie, near 1 when
the kept units stand clearly apart; 1.0 when every unit is kept, 0.0 for a text with no
unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tasks.summarization.units import clean_target, fit_to_target, join_units, split_units

# A similarity gap of 0.05 (cosine) gives 0.73, 0.1 gives 0.88.
MARGIN_SCALE = 0.05


def _embed(texts: list[str]) -> np.ndarray:
    from distillapp.ml import embed_texts

    return embed_texts(texts)


class CentroidTeacher:
    """Extractive summaries of the most central units (module docstring); `embed` maps texts
    to L2-normalised rows (the bundled MiniLM unless given)."""

    name = "centroid-minilm"
    confidence_method = "margin"

    def __init__(
        self, target: Mapping | None = None, *, embed: Callable[[list[str]], np.ndarray] | None = None
    ):
        self.target = clean_target(target)
        self._embed = embed or _embed

    def predict(self, texts: Sequence[str]) -> list[tuple[dict, float]]:
        """One ``({"summary": ...}, confidence)`` per text, in order."""
        spans = [split_units(text) for text in texts]
        flat = [text[s:e] for text, sp in zip(texts, spans, strict=True) for s, e in sp]
        vectors = self._embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        out, start = [], 0
        for text, sp in zip(texts, spans, strict=True):
            rows = vectors[start : start + len(sp)]
            start += len(sp)
            out.append(self._summarise(text, sp, rows))
        return out

    def _summarise(self, text: str, spans: list[tuple[int, int]], vectors: np.ndarray) -> tuple[dict, float]:
        if not spans:
            return {"summary": ""}, 0.0
        centroid = vectors.mean(axis=0)
        centroid = centroid / (np.linalg.norm(centroid) or 1.0)
        similarity = vectors @ centroid
        ranked = [int(i) for i in np.argsort(-similarity, kind="stable")]
        units = [text[s:e] for s, e in spans]
        kept = fit_to_target(units, ranked, self.target)
        left = [i for i in range(len(units)) if i not in kept]
        if not left:
            return {"summary": join_units(text, spans, kept)}, 1.0
        margin = float(similarity[kept].min() - similarity[left].max())
        return {"summary": join_units(text, spans, kept)}, 1 / (1 + math.exp(-margin / MARGIN_SCALE))
