"""The quick extraction student: frozen contextual word vectors and a linear head over BIO tags.

The module interface of ``tasks.extraction.student``, trained in seconds: the base model is
never updated. Each tokenizer word (``ml.tokenizer_words``) is its layer-``LAYER`` vector
(``ml.embed_words``, cached per text by ``distillapp.embeddings.embed_words_cached``) beside
two neighbours on each side, plus capital and digit flags; a logistic regression over the
fields' BIO tags gives probabilities that ``student.decode`` turns into spans. A model
directory holds ``quick_head.joblib`` (a pickle: load only directories this app wrote) and
``quick_student.json``; after ``export_onnx`` an int8 encoder and a copy of the head serve on
their own. Measured in bench/README.md, section "Quick extraction student".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from distillapp import embeddings, ml
from tasks.extraction.span_quality import word_tags
from tasks.extraction.student import bio_labels, decode
from tasks.heads import CONFIG_FILE, HEAD_FILE, load, one_blas_thread

UNIT = "tokenizer"  # how texts are cut into words: part of the embedding cache's key
LAYER = 3  # the span quality run's layer (tasks/extraction/span_quality.py); bench/README.md
DEFAULT_C = 3.0
CONTEXT = 2  # neighbours on each side beside a word's own vector
MAX_ITER = 1000


def with_context(vectors: np.ndarray, width: int = CONTEXT) -> np.ndarray:
    """Each word's L2-normalised vector, then its neighbours' at 1..`width` words to the left
    and to the right (zeros past the text's edges): (words, (2 * width + 1) * dim)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    n = len(unit)
    parts = [unit]
    for k in range(1, width + 1):
        left, right = np.zeros_like(unit), np.zeros_like(unit)
        left[k:], right[: max(0, n - k)] = unit[: max(0, n - k)], unit[k:]
        parts += [left, right]
    return np.hstack(parts)


def word_features(
    text: str, words: list[tuple[int, int]], vectors: np.ndarray, *, width: int = CONTEXT
) -> np.ndarray:
    """(words, 5 * dim + 2): each word's vector in its context (``with_context``) and its two
    flags (starts with a capital, all digits)."""
    flags = np.array(
        [[float(text[start].isupper()), float(text[start:end].isdigit())] for start, end in words],
        dtype=np.float32,
    ).reshape(len(words), 2)
    return np.hstack([with_context(vectors, width), flags]).astype(np.float32)


def _features(
    texts: list[str],
    *,
    model_name: str,
    max_length: int,
    layer: int,
    width: int,
    cache_dir: Path | None,
    batch_size: int = embeddings.EMBED_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[list[tuple[int, int]]], list[np.ndarray]]:
    words = ml.tokenizer_words(texts, model_name=model_name)
    vectors = embeddings.embed_words_cached(
        texts,
        words,
        unit=UNIT,
        model_name=model_name,
        max_length=max_length,
        layer=layer,
        cache_dir=cache_dir,
        batch_size=batch_size,
        on_batch=on_batch,
        should_stop=should_stop,
    )
    return words, [word_features(t, w, v, width=width) for t, w, v in zip(texts, words, vectors, strict=True)]


def train(
    *,
    texts: list[str],
    answers: list[Mapping],
    names: list[str],
    base_model: str,
    output_dir: Path,
    hyperparameters: ml.Hyperparameters,
    validation: tuple[list[str], list[Mapping]] | None = None,
    on_progress: Callable[[ml.Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    embedding_cache_dir: Path | None = None,
    c: float = DEFAULT_C,
    weights: list[float] | None = None,
    ignore: list[list[tuple[int, int]]] | None = None,
) -> ml.TrainResult:
    """Embed the words of `texts` with the frozen `base_model` and fit a logistic-regression
    head over the BIO tags of `names`; `answers` are ``{"spans": [...]}``.

    Each embedding batch is one progress step and fitting the head the last; `should_stop()`
    is asked before every batch and before the fit, and a true answer raises ``ml.Stopped``
    with nothing written to `output_dir` (cached vectors made so far are kept). Uses
    `hyperparameters.max_length`, `.class_weighting` and `.seed`; `weights` (one per text)
    weigh every word of their text; `ignore` (character ranges, one list per text) leaves the
    words they overlap out of the fit (noise handling "mask"). ``result.validation`` holds the strict (and partial)
    entity micro-F1 on `validation`, as the fine-tune's does.
    """
    from sklearn.linear_model import LogisticRegression

    hp = hyperparameters
    labels = bio_labels(names)
    index = {label: i for i, label in enumerate(labels)}
    validation_texts = list(validation[0]) if validation and validation[0] else []
    started = time.monotonic()
    embed_batches = [0]

    def on_batch(done: int, total: int) -> None:
        embed_batches[0] = total
        if on_progress is not None:
            on_progress(ml.Progress(step=done, total_steps=total + 1, epoch=0.0, loss=None))

    all_texts = list(texts) + validation_texts
    words, features = _features(
        all_texts,
        model_name=base_model,
        max_length=hp.max_length,
        layer=LAYER,
        width=CONTEXT,
        cache_dir=embedding_cache_dir,
        on_batch=on_batch,
        should_stop=should_stop,
    )
    embed_seconds = time.monotonic() - started
    if should_stop is not None and should_stop():
        raise ml.Stopped()
    targets, kept = [], []
    for j, (text, answer, text_words) in enumerate(zip(texts, answers, words, strict=False)):
        tags = word_tags(text, answer.get("spans", []), text_words)
        unknown = {tag for tag in tags if tag not in index}
        if unknown:
            raise ValueError(
                f"a span names a field that is not one of the student's fields: {sorted(unknown)}"
            )
        keep = np.ones(len(tags), dtype=bool)
        for start, end in (ignore[j] if ignore else ()):
            keep &= ~np.array([s < end and e > start for s, e in text_words], dtype=bool).reshape(len(tags))
        targets.append(np.array([index[tag] for tag in tags], dtype=np.int64)[keep])
        kept.append(keep)
    x = (
        np.vstack([f[keep] for f, keep in zip(features, kept, strict=False)])
        if texts
        else np.empty((0, 0), dtype=np.float32)
    )
    y = np.concatenate(targets) if targets else np.empty(0, dtype=np.int64)
    if len(set(y.tolist())) < 2:
        raise ValueError(
            "The quick extraction student needs words of at least two tags (a span and outside one)."
        )
    sample_weight = None
    if weights is not None:
        sample_weight = np.concatenate(
            [np.full(len(t), w, dtype=np.float64) for t, w in zip(targets, weights, strict=True)]
        )
    fit_started = time.monotonic()
    head = LogisticRegression(
        C=c, max_iter=MAX_ITER, class_weight="balanced" if hp.class_weighting else None, random_state=hp.seed
    )
    with one_blas_thread():
        head.fit(x, y, sample_weight=sample_weight)
        train_proba = head.predict_proba(x)
    fit_seconds = time.monotonic() - fit_started
    total_steps = embed_batches[0] + 1
    rows = np.searchsorted(head.classes_, y)
    loss = float(-np.mean(np.log(np.clip(train_proba[np.arange(len(y)), rows], 1e-12, None))))
    if on_progress is not None:
        on_progress(ml.Progress(step=total_steps, total_steps=total_steps, epoch=1.0, loss=loss))

    import joblib

    output_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(head, output_dir / HEAD_FILE)
    config = {
        "kind": "quick",
        "base_model": base_model,
        "names": list(names),
        "labels": labels,
        "max_length": hp.max_length,
        "layer": LAYER,
        "context": CONTEXT,
        "classifier": "LogisticRegression",
        "C": c,
        "class_weight": head.class_weight,
        "train_examples": len(texts),
        "train_words": int(len(y)),
        "iterations": int(np.max(head.n_iter_)),
        "timings": {"embed_seconds": round(embed_seconds, 3), "head_fit_seconds": round(fit_seconds, 3)},
    }
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    result = ml.TrainResult(
        device=ml.device(), seconds=time.monotonic() - started, steps=total_steps, stopped_early=False
    )
    if validation_texts:
        from tasks.extraction.measure import entity_scores

        n = len(texts)
        predicted, _ = _decode_all(head, config, validation_texts, words[n:], features[n:])
        scores = entity_scores(list(validation[1]), predicted, list(names))
        result.validation = {
            "examples": len(validation_texts),
            "strict_f1": scores["strict"]["micro"]["f1"],
            "partial_f1": scores["partial"]["micro"]["f1"],
        }
    return result


def predict(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    embedding_cache_dir: Path | None = None,
) -> tuple[list[dict], list[float]]:
    """Each text's answer ``{"spans": [{"start", "end", "field", "confidence"}]}`` and its
    confidence. `max_length` is accepted for the student interface; the head's own is used."""
    head, config = load(model_dir)
    if not texts:
        return [], []
    words, features = _features(
        list(texts),
        model_name=config["base_model"],
        max_length=config["max_length"],
        layer=config["layer"],
        width=config["context"],
        cache_dir=embedding_cache_dir,
        batch_size=batch_size,
    )
    return _decode_all(head, config, list(texts), words, features)


def _decode_all(head, config: dict, texts, words, features) -> tuple[list[dict], list[float]]:
    """Spans and confidences of each text from its words' features (``student.decode``)."""
    labels = config["labels"]
    answers, confidences = [], []
    if not texts:
        return answers, confidences
    stacked = np.vstack(features)
    with one_blas_thread():
        proba = head.predict_proba(stacked) if len(stacked) else np.empty((0, len(head.classes_)))
    # A tag the head never saw gets probability 0 (best_path then never takes it).
    columns = np.zeros((len(proba), len(labels)), dtype=np.float64)
    columns[:, head.classes_] = proba
    for text, text_words, rows in zip(
        texts, words, np.split(columns, np.cumsum([len(f) for f in features])[:-1]), strict=True
    ):
        answer, confidence = decode(text, text_words, rows, labels)
        answers.append(answer)
        confidences.append(confidence)
    return answers, confidences


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    """The base encoder as ONNX int8, its layer ``LAYER`` as the output (``ml.export_onnx_int8``
    with ``layer``), beside a copy of the head and its config: `out_dir` then serves on its
    own (``predict_onnx``). Cut at the length the head was trained with."""
    import shutil

    _, config = load(model_dir)
    out = ml.export_onnx_int8(
        config["base_model"],
        out_dir,
        max_length=config["max_length"],
        auto_class="AutoModel",
        layer=config["layer"],
    )
    for name in (HEAD_FILE, CONFIG_FILE):
        shutil.copyfile(Path(model_dir) / name, out / name)
    return out


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[dict], list[float]]:
    """Like `predict`, from an `export_onnx` directory, on ONNX Runtime (no torch model)."""
    head, config = load(onnx_dir)
    if not texts:
        return [], []
    tokenizer, session, _ = ml.load_onnx(onnx_dir)
    texts = list(texts)
    words = ml.tokenizer_words(texts, tokenizer=tokenizer)
    keys = [i.name for i in session.get_inputs()]

    def hidden(feed: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(["hidden"], {key: feed[key] for key in keys})[0]

    vectors = ml.embed_words(
        texts,
        words,
        batch_size=batch_size,
        max_length=config["max_length"],
        encoder=(tokenizer, hidden),
    )
    features = [
        word_features(t, w, v, width=config["context"]) for t, w, v in zip(texts, words, vectors, strict=True)
    ]
    return _decode_all(head, config, texts, words, features)
