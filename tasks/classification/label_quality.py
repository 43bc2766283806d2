"""Label quality of classification labels: how likely each example's label is wrong (confident learning).

``label_quality_scores`` puts likely label errors first in a human review queue, as cleanlab
does: MiniLM embeddings (``distillapp.ml.embed_texts``, imported lazily), out-of-sample
probabilities from a K-fold logistic regression (a model that never saw the example cannot
memorise its possibly wrong label), then ``cleanlab.rank.get_label_quality_scores``
(``normalized_margin``, C = 1; lower = more likely wrong). ``label_quality`` also flags the
labels a run leaves out (``find_label_issues(filter_by="prune_by_noise_rate")``). Why these
choices, the measurements and the small-class rules: bench/README.md, "Label quality".
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

METHOD = "normalized_margin"
C = 1.0
MAX_ITER = 300
SINGLETON_SCORE = 0.5
# Below this many examples, starting worker processes costs more than the folds take.
PARALLEL_MIN_EXAMPLES = 2000


def label_quality_scores(
    texts: list[str],
    labels: list[str],
    *,
    folds: int = 5,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """One score per example in [0, 1] (float64); lower = its label is more likely wrong.

    ``embeddings`` (n, dim), when given, are used instead of embedding ``texts``
    (e.g. L2-normalised MiniLM vectors already at hand). See the module docstring.
    """
    return label_quality(texts, labels, folds=folds, seed=seed, embeddings=embeddings)[0]


def label_quality(
    texts: list[str],
    labels: list[str],
    *,
    folds: int = 5,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The scores of `label_quality_scores` and, from the same out-of-sample probabilities,
    which labels are likely errors (bool per example): cleanlab's ``find_label_issues`` with
    ``prune_by_noise_rate``, which estimates how many labels of each given class are wrong
    (the confident joint) and flags that many, those with the lowest margin. See the module
    docstring for why this and not a fixed score threshold."""
    n = len(labels)
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts but {n} labels.")
    if folds < 2:
        raise ValueError("folds must be >= 2.")
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, dim), not {embeddings.shape}.")
    scores = np.ones(n, dtype=np.float64)
    issues = np.zeros(n, dtype=bool)
    counts = Counter(labels)
    if len(counts) < 2:
        return scores, issues

    singleton = np.array([counts[label] == 1 for label in labels], dtype=bool)
    scores[singleton] = SINGLETON_SCORE
    kept = np.flatnonzero(~singleton)
    kept_counts = [count for count in counts.values() if count >= 2]
    if len(kept_counts) < 2:
        return scores, issues

    if embeddings is None:
        from distillapp import embeddings as cache
        from distillapp.ml import default_base_model

        # Through the app's embedding cache: a review round's quick student has usually
        # embedded these texts already (same model, same 128 tokens).
        features = cache.embed(
            [texts[i] for i in kept],
            model_name=default_base_model(),
            max_length=128,
            cache_dir=cache.default_cache_dir(),
        )
    else:
        features = embeddings[kept]

    classes = sorted({labels[i] for i in kept})
    index = {label: i for i, label in enumerate(classes)}
    int_labels = np.array([index[labels[i]] for i in kept], dtype=np.intp)
    pred_probs = out_of_sample_pred_probs(features, int_labels, folds=min(folds, min(kept_counts)), seed=seed)

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    kept_scores = get_label_quality_scores(labels=int_labels, pred_probs=pred_probs, method=METHOD)
    scores[kept] = np.clip(kept_scores, 0.0, 1.0)
    issues[kept] = find_label_issues(
        labels=int_labels, pred_probs=pred_probs, filter_by="prune_by_noise_rate", n_jobs=1
    )
    return scores, issues


def out_of_sample_pred_probs(
    features: np.ndarray, int_labels: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """(n, classes) probabilities, each row from a model fit without that example.

    ``int_labels`` are 0..classes-1, each with at least ``folds`` examples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    if features.dtype not in (np.float32, np.float64):
        features = features.astype(np.float32)
    model = LogisticRegression(C=C, max_iter=MAX_ITER)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    n_jobs = min(folds, os.cpu_count() or 1) if len(features) >= PARALLEL_MIN_EXAMPLES else 1
    # One BLAS thread per fit: multi-threaded BLAS is slower than one thread on these small
    # products (10,003 x 384 x 77), so the cores go to folds in parallel processes instead.
    with threadpool_limits(limits=1, user_api="blas"):
        return cross_val_predict(model, features, int_labels, cv=cv, method="predict_proba", n_jobs=n_jobs)
