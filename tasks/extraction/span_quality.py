"""Label quality of span answers: how likely each text's current spans are wrong.

Confident learning over words, the way cleanlab scores token classification: each
whitespace word gets the BIO tag of the current spans (the first of overlapping spans kept)
and a contextual vector (``ml.embed_words``, layer ``LAYER``, beside its two neighbours);
a logistic regression over the tags, K-fold FOLDED BY TEXT (a text's words are never
scored by a model that saw any of them), gives out-of-sample probabilities, and
``cleanlab.token_classification.rank.get_label_quality_scores`` a score per word and per
text (its worst word) in [0, 1]; lower = more likely a missed, shifted or wrong-field span.
The choices and their measurements: bench/README.md, section "Span label quality".
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.extraction.spans import whitespace_tokens, without_overlaps

METHOD = "self_confidence"
# The base model's layer the word vectors come from (of MiniLM-L6's 6; 0 is the input
# embeddings) and the inverse regularisation of the regression (bench/README.md,
# "Span label quality").
LAYER = 3
C = 1.0
MAX_ITER = 300
NEUTRAL_SCORE = 0.5
# A text the quality run flags as likely wrong (what "prune" leaves out): on 3,000 Restaurant-8k
# texts of the simulated teacher (24 % corrupted), below 0.1 flags 15 % of the texts at 89 %
# precision (57 % of the corrupted ones); below 0.5 flags 44 % at 54 % (bench/README.md).
FLAGGED_BELOW = 0.1
# A word outside the spans the quality run flags (what "mask" leaves out of the loss): measured
# on Restaurant-8k with the simulated teacher against pruning the texts below FLAGGED_BELOW
# (bench/span_noise_bench.py; bench/README.md, "Review budget, extraction").
MASK_BELOW = 0.3
# A tag in fewer texts cannot be predicted out of sample with any trust (a fold fit without
# them never saw it, so its words would top the queue): they score NEUTRAL_SCORE and stay out
# of the fit. With fewer than two tags or two texts with words left, every score is 1.0.
MIN_TAG_TEXTS = 2
# Below this many words, starting worker processes costs more than the folds take.
PARALLEL_MIN_WORDS = 10_000


@dataclass
class SpanQuality:
    """``text_scores`` (n,) and, for each text, its words (start, end), their given tags and
    their scores (NEUTRAL_SCORE for rare tags; 1.0 where nothing was scored)."""

    text_scores: np.ndarray
    words: list[list[tuple[int, int]]]
    tags: list[list[str]]
    word_scores: list[np.ndarray]


def word_tags(text: str, spans: Sequence[Mapping], words: Sequence[tuple[int, int]]) -> list[str]:
    """The BIO tag of each word (start, end) under these spans: a word that overlaps a span
    is ``B-`` if it is the span's first such word, else ``I-``."""
    tags = ["O"] * len(words)
    for span in without_overlaps(spans):
        inside = [j for j, (s, e) in enumerate(words) if s < span["end"] and e > span["start"]]
        for k, j in enumerate(inside):
            if tags[j] == "O":  # two spans in one word (a cut inside it): the first wins
                tags[j] = ("B-" if k == 0 else "I-") + span["field"]
    return tags


def label_quality_scores(texts: list[str], answers: list[Mapping], **options) -> np.ndarray:
    """One score per text in [0, 1] (float64); lower = its spans are more likely wrong.

    ``answers`` are ``{"spans": [...]}``; ``options`` are ``span_quality``'s: ``word_vectors``
    (one (words, dim) array per text, over ``whitespace_tokens``), when given, are used instead
    of embedding the texts; ``cache_dir`` keeps the embedded words per text.
    """
    return span_quality(texts, answers, **options).text_scores


def span_quality(
    texts: list[str],
    answers: list[Mapping],
    *,
    folds: int = 5,
    seed: int = 0,
    model_name: str | None = None,
    word_vectors: list[np.ndarray] | None = None,
    cache_dir=None,
) -> SpanQuality:
    """Text and word scores (see SpanQuality and the module docstring)."""
    n = len(texts)
    if len(answers) != n:
        raise ValueError(f"{n} texts but {len(answers)} answers.")
    if folds < 2:
        raise ValueError("folds must be >= 2.")
    words = [whitespace_tokens(text) for text in texts]
    tags = [
        word_tags(text, answer.get("spans", []), w)
        for text, answer, w in zip(texts, answers, words, strict=True)
    ]
    if word_vectors is not None and [len(v) for v in word_vectors] != [len(w) for w in words]:
        raise ValueError("word_vectors must hold one row per whitespace word of each text.")
    result = SpanQuality(np.ones(n), words, tags, [np.ones(len(w)) for w in words])

    texts_with = Counter(tag for text_tags in tags for tag in set(text_tags))
    known = {tag for tag, count in texts_with.items() if count >= MIN_TAG_TEXTS}
    for j, text_tags in enumerate(tags):
        result.word_scores[j][[tag not in known for tag in text_tags]] = NEUTRAL_SCORE
    scored = [j for j in range(n) if any(tag in known for tag in tags[j])]
    if len(known) < 2 or len(scored) < 2:
        return _text_scores(result)

    if word_vectors is None:
        from distillapp import embeddings, ml

        # Cached per text: a review round scores the same pool again with new labels.
        vectors = embeddings.embed_words_cached(
            [texts[j] for j in scored],
            [words[j] for j in scored],
            unit="whitespace",
            model_name=model_name or ml.default_base_model(),
            max_length=128,
            layer=LAYER,
            cache_dir=cache_dir,
        )
    else:
        vectors = [np.asarray(word_vectors[j], dtype=np.float32) for j in scored]
    vectors = [with_neighbours(v) for v in vectors]
    classes = sorted(known)
    index = {tag: i for i, tag in enumerate(classes)}
    rows, labels, groups = [], [], []
    for g, (j, v) in enumerate(zip(scored, vectors, strict=True)):
        keep = [k for k, tag in enumerate(tags[j]) if tag in known]
        rows.append(v[keep])
        labels += [index[tags[j][k]] for k in keep]
        groups += [g] * len(keep)
    features = np.vstack(rows)
    int_labels = np.array(labels, dtype=np.intp)
    pred_probs = out_of_sample_word_probs(
        features, int_labels, np.array(groups), folds=min(folds, len(scored)), seed=seed
    )

    from cleanlab.token_classification.rank import get_label_quality_scores

    bounds = np.cumsum([len(r) for r in rows])[:-1]
    _, token_scores = get_label_quality_scores(
        [part.tolist() for part in np.split(int_labels, bounds)],
        np.split(pred_probs, bounds),
        token_score_method=METHOD,
    )
    for j, scores in zip(scored, token_scores, strict=True):
        keep = [k for k, tag in enumerate(tags[j]) if tag in known]
        result.word_scores[j][keep] = np.clip(scores.to_numpy(), 0.0, 1.0)
    return _text_scores(result)


def flagged_words(quality: SpanQuality, below: float = MASK_BELOW) -> list[list[list[int]]]:
    """Each text's words outside every span that score below `below` (a value the spans
    likely missed), as [start, end] character ranges. Flagged words inside a span stay: on
    1,000 texts leaving them out too cost 2 points of the quick student's strict F1 (their
    field's rare tags score low on little data), on all 7,959 it changed nothing
    (bench/span_noise_bench.py)."""
    return [
        [
            [int(start), int(end)]
            for (start, end), score, tag in zip(words, scores, tags, strict=True)
            if score < below and tag == "O"
        ]
        for words, scores, tags in zip(quality.words, quality.word_scores, quality.tags, strict=True)
    ]


def with_neighbours(vectors: np.ndarray) -> np.ndarray:
    """Each word's L2-normalised vector beside its left and right neighbours' (zeros at the
    text's edges): (words, 3 * dim)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    edge = np.zeros((1, unit.shape[1]), dtype=unit.dtype)
    return np.hstack([unit, np.vstack([edge, unit[:-1]]), np.vstack([unit[1:], edge])])


def _text_scores(result: SpanQuality) -> SpanQuality:
    # cleanlab's "min" sentence score, over the neutral words too.
    result.text_scores = np.array([float(s.min()) if len(s) else 1.0 for s in result.word_scores])
    return result


def out_of_sample_word_probs(
    features: np.ndarray, int_labels: np.ndarray, groups: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """(words, tags) probabilities, each row from a model fit without any word of its text
    (``groups``: the text of each word). A tag a fold's training words lack gets 0 there."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=C, max_iter=MAX_ITER)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    n_jobs = min(folds, os.cpu_count() or 1) if len(features) >= PARALLEL_MIN_WORDS else 1
    # One BLAS thread per fit, folds in parallel processes (as for classification's scores).
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # "The least populated class has only k members": rare tags are expected here.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return cross_val_predict(
            model, features, int_labels, groups=groups, cv=cv, method="predict_proba", n_jobs=n_jobs
        )
