"""The quick classification student: frozen base-model embeddings and a logistic-regression head.

The module interface of ``tasks.classification.student``, trained in seconds: the base model
is never updated, each text is embedded once (``ml.embed_texts``, cached by
``distillapp.embeddings``, so a retrain embeds only new texts) and scikit-learn fits a
multinomial logistic regression. A model directory holds ``quick_head.joblib`` (a pickle:
load only directories this app wrote) and ``quick_student.json``; the encoder is loaded from
``base_model`` when predicting, or after ``export_onnx`` the int8 encoder and a copy of the
head serve on their own. Also here: averaging two students (``average_proba``, weight from
``choose_weight`` on validation). Measured: bench/README.md, section "Quick student".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from distillapp import embeddings, ml
from tasks import stats
from tasks.heads import CONFIG_FILE, HEAD_FILE, load, one_blas_thread

DEFAULT_C = 10.0
# lbfgs on 10k MiniLM vectors x 77 labels at C = 10 converges in a few hundred iterations;
# the margin keeps a harder task from stopping on a ConvergenceWarning.
MAX_ITER = 2000


def train(
    *,
    texts: list[str],
    answers: list[str],
    names: list[str],
    base_model: str,
    output_dir: Path,
    hyperparameters: ml.Hyperparameters,
    validation: tuple[list[str], list[str]] | None = None,
    on_progress: Callable[[ml.Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    embedding_cache_dir: Path | None = None,
    c: float = DEFAULT_C,
    weights: list[float] | None = None,
) -> ml.TrainResult:
    """Embed `texts` with the frozen `base_model` and fit a logistic-regression head over `names`.

    Each embedding batch is one progress step and fitting the head the last; `should_stop()`
    is asked before every batch and before the fit, and a true answer raises ``ml.Stopped``
    with nothing written to `output_dir` (cached embeddings made so far are kept).
    Uses `hyperparameters.max_length`, `.class_weighting` ("balanced" weights) and `.seed`;
    `weights` (one per text) are the fit's sample weights. A temperature fitted on the
    validation split is kept in the config and applied by ``predict_proba``.
    """
    from sklearn.linear_model import LogisticRegression

    hp = hyperparameters
    index = {name: i for i, name in enumerate(names)}
    targets = np.array([index[answer] for answer in answers], dtype=np.int64)
    if len(set(targets.tolist())) < 2:
        raise ValueError("The quick student needs training examples of at least two labels.")
    validation_texts = list(validation[0]) if validation and validation[0] else []
    started = time.monotonic()
    # Steps: one per embedding batch of the texts not yet cached, then one for the head.
    embed_batches = [0]

    def on_batch(done: int, total: int) -> None:
        embed_batches[0] = total
        if on_progress is not None:
            on_progress(ml.Progress(step=done, total_steps=total + 1, epoch=0.0, loss=None))

    vectors = embeddings.embed(
        texts + validation_texts,
        model_name=base_model,
        max_length=hp.max_length,
        cache_dir=embedding_cache_dir,
        on_batch=on_batch,
        should_stop=should_stop,
    )
    embed_seconds = time.monotonic() - started
    if should_stop is not None and should_stop():
        raise ml.Stopped()
    fit_started = time.monotonic()
    head = LogisticRegression(
        C=c,
        max_iter=MAX_ITER,
        class_weight="balanced" if hp.class_weighting else None,
        random_state=hp.seed,
    )
    with one_blas_thread():
        head.fit(
            vectors[: len(texts)], targets, sample_weight=None if weights is None else np.asarray(weights)
        )
        probabilities = head.predict_proba(vectors)
    fit_seconds = time.monotonic() - fit_started
    total_steps = embed_batches[0] + 1
    train_proba = _columns(head, probabilities[: len(texts)], len(names))
    loss = float(-np.mean(np.log(np.clip(train_proba[np.arange(len(texts)), targets], 1e-12, None))))
    if on_progress is not None:
        on_progress(ml.Progress(step=total_steps, total_steps=total_steps, epoch=1.0, loss=loss))

    import joblib

    output_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(head, output_dir / HEAD_FILE)
    config = {
        "kind": "quick",
        "base_model": base_model,
        "names": list(names),
        "max_length": hp.max_length,
        "classifier": "LogisticRegression",
        "C": c,
        "class_weight": head.class_weight,
        "train_examples": len(texts),
        "iterations": int(np.max(head.n_iter_)),
        "temperature": 1.0,
        "timings": {"embed_seconds": round(embed_seconds, 3), "head_fit_seconds": round(fit_seconds, 3)},
    }
    result = ml.TrainResult(
        device=ml.device(), seconds=time.monotonic() - started, steps=total_steps, stopped_early=False
    )
    if validation_texts:
        proba = _columns(head, probabilities[len(texts) :], len(names))
        predicted = [names[i] for i in proba.argmax(axis=1)]
        correct = sum(p == g for p, g in zip(predicted, validation[1], strict=True))
        result.validation = {"examples": len(validation_texts), "accuracy": correct / len(validation_texts)}
        known = [i for i, label in enumerate(validation[1]) if label in index]
        fitted = stats.fit_temperature(
            np.log(np.clip(proba[known], 1e-30, None)), np.array([index[validation[1][i]] for i in known])
        )
        config["temperature"] = fitted["temperature"]
        result.validation["calibration"] = fitted
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return result


def predict(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    embedding_cache_dir: Path | None = None,
) -> tuple[list[str], list[float]]:
    """The predicted label and its probability for each text."""
    probabilities, names = predict_proba(
        model_dir,
        texts,
        batch_size=batch_size,
        max_length=max_length,
        embedding_cache_dir=embedding_cache_dir,
    )
    return stats.best_labels(probabilities, names)


def predict_proba(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    embedding_cache_dir: Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Probabilities (n, len(names)) in the column order of the names the student was trained for.

    `max_length` is accepted for the student interface but the one the head was trained
    with is used: the head only knows embeddings of texts cut at that length. A label with
    no training example gets probability 0.
    """
    head, config = load(model_dir)
    names = config["names"]
    if not texts:
        return np.empty((0, len(names)), dtype=np.float32), names
    vectors = embeddings.embed(
        texts,
        model_name=config["base_model"],
        max_length=config["max_length"],
        cache_dir=embedding_cache_dir,
        batch_size=batch_size,
    )
    return _head_probabilities(head, config, vectors), names


def _head_probabilities(head, config: dict, vectors: np.ndarray) -> np.ndarray:
    """The head's calibrated probabilities of embedded texts, one column per trained-for name."""
    with one_blas_thread():
        probabilities = _columns(head, head.predict_proba(vectors), len(config["names"]))
    t = float(config.get("temperature", 1.0))
    if t != 1.0:
        # A label the head never saw keeps probability 0 (log 0 = -inf stays -inf).
        with np.errstate(divide="ignore"):
            probabilities = stats.apply_temperature(np.log(probabilities), t)
    return probabilities.astype(np.float32)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    """The base encoder as ONNX int8 (mean pooling and normalising in the graph,
    ``ml.export_onnx_int8`` with ``AutoModel``) beside a copy of the head and its config:
    `out_dir` then serves on its own (``predict_onnx``), without torch. The encoder is cut
    at the length the head was trained with, whatever `max_length` says."""
    import shutil

    _, config = load(model_dir)
    out = ml.export_onnx_int8(
        config["base_model"], out_dir, max_length=config["max_length"], auto_class="AutoModel"
    )
    for name in (HEAD_FILE, CONFIG_FILE):
        shutil.copyfile(Path(model_dir) / name, out / name)
    return out


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    """Like `predict`, from an `export_onnx` directory, on ONNX Runtime (no torch model)."""
    probabilities, names = predict_proba_onnx(onnx_dir, texts, batch_size=batch_size)
    return stats.best_labels(probabilities, names)


def predict_proba_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64
) -> tuple[np.ndarray, list[str]]:
    """`predict_proba` from an `export_onnx` directory: texts of the same token length share
    one call (``ml.same_length_batches``: no padding)."""
    head, config = load(onnx_dir)
    names = config["names"]
    if not texts:
        return np.empty((0, len(names)), dtype=np.float32), names
    tokenizer, session, _ = ml.load_onnx(onnx_dir)
    encoded = tokenizer(list(texts), truncation=True, max_length=config["max_length"])
    keys = [i.name for i in session.get_inputs()]
    vectors: np.ndarray | None = None
    for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
        feed = {key: np.array([encoded[key][i] for i in idx], dtype=np.int64) for key in keys}
        out = session.run(["embedding"], feed)[0]
        if vectors is None:
            vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
        vectors[idx] = out
    return _head_probabilities(head, config, vectors), names


def _columns(head, proba: np.ndarray, n_names: int) -> np.ndarray:
    # The head knows only the labels it saw; the others get probability 0 in their column.
    out = np.zeros((len(proba), n_names), dtype=np.float64)
    out[:, head.classes_] = proba
    return out


# --- two students together ---------------------------------------------------------------------

WEIGHT_GRID = tuple(round(i / 10, 1) for i in range(11))


def average_proba(p1: np.ndarray, p2: np.ndarray, weight: float) -> np.ndarray:
    """``weight * p1 + (1 - weight) * p2``: both (n, labels) in the same column order."""
    if p1.shape != p2.shape:
        raise ValueError(f"Probabilities of different shapes: {p1.shape} and {p2.shape}.")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"The weight must be in [0, 1], not {weight}.")
    return weight * p1 + (1.0 - weight) * p2


def align_proba(probabilities: np.ndarray, names: list[str], target_names: list[str]) -> np.ndarray:
    """`probabilities` with columns reordered from `names` to `target_names` (0 where missing)."""
    out = np.zeros((len(probabilities), len(target_names)), dtype=probabilities.dtype)
    where = {name: i for i, name in enumerate(names)}
    for j, name in enumerate(target_names):
        if name in where:
            out[:, j] = probabilities[:, where[name]]
    return out


def choose_weight(
    p1: np.ndarray,
    p2: np.ndarray,
    validation_labels: Sequence[str],
    names: list[str],
    grid: Sequence[float] = WEIGHT_GRID,
) -> float:
    """The weight on `p1` in `grid` whose average is most accurate on `validation_labels`.

    Call it with both students' probabilities of the run's VALIDATION texts and their
    labels, never of gold: a weight picked on gold makes the ensemble's gold score a score
    of the data it was tuned on. Ties (frequent on small splits) go to the lower log loss,
    then to the weight nearest 0.5 (the plain average).
    """
    index = {name: i for i, name in enumerate(names)}
    targets = np.array([index.get(label, -1) for label in validation_labels])
    known = targets >= 0
    rows = np.arange(len(targets))[known]

    def score(weight: float) -> tuple[float, float, float]:
        averaged = average_proba(p1, p2, weight)
        accuracy = float(np.mean(averaged.argmax(axis=1) == targets)) if len(targets) else 0.0
        log_loss = (
            float(-np.mean(np.log(np.clip(averaged[rows, targets[known]], 1e-12, None))))
            if len(rows)
            else 0.0
        )
        return accuracy, -log_loss, -abs(weight - 0.5)

    return max(grid, key=score)
