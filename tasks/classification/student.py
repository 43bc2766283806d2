"""The classification student: a sequence-classification head on the base model.

Training goes through the shared loop (``distillapp.ml.fit``); prediction returns each
text's label and its softmax probability, from the torch model or its ONNX int8 export,
with the temperature fitted on the validation split (``calibration.json``) applied.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from distillapp import ml
from tasks import stats

AUTO_CLASS = "AutoModelForSequenceClassification"


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
    weights: list[float] | None = None,
) -> ml.TrainResult:
    """Fine-tune `base_model` to tell the `names` apart; `answers` are label names.

    `weights` (one per text, e.g. the teacher's confidence) scale each example's loss.
    After training, a temperature is fitted on the validation split (``calibration.json``),
    so the served confidences mean what they say.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        set_seed,
    )

    hp = hyperparameters
    set_seed(hp.seed)
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id
    )
    train_set = ml.LabelledEncodings(
        tokenizer(texts, truncation=True, max_length=hp.max_length),
        [label2id[label] for label in answers],
        weights=weights,
    )
    compute_loss = None
    if hp.class_weighting or weights is not None or hp.label_smoothing:
        class_weights = None
        if hp.class_weighting:
            counts = torch.bincount(torch.tensor(train_set.labels), minlength=len(names)).float()
            class_weights = counts.sum() / (len(names) * counts.clamp(min=1))

        def compute_loss(model, inputs):
            targets = inputs.pop("labels")
            sample_weight = inputs.pop("sample_weight", None)
            outputs = model(**inputs)
            loss = weighted_loss(
                outputs.logits,
                targets,
                class_weights=class_weights,
                sample_weight=sample_weight,
                label_smoothing=hp.label_smoothing,
            )
            return loss, outputs

    result = ml.fit(
        model=model,
        tokenizer=tokenizer,
        train_set=train_set,
        collator=DataCollatorWithPadding(tokenizer),
        output_dir=output_dir,
        hyperparameters=hp,
        on_progress=on_progress,
        should_stop=should_stop,
        compute_loss=compute_loss,
    )
    if validation and validation[0]:
        probabilities, _ = predict_proba(output_dir, validation[0], max_length=hp.max_length)
        predicted, _ = stats.best_labels(probabilities, names)
        correct = sum(p == g for p, g in zip(predicted, validation[1], strict=True))
        result.validation = {"examples": len(validation[0]), "accuracy": correct / len(validation[0])}
        result.validation["calibration"] = calibrate(output_dir, probabilities, validation[1], names)
    return result


def weighted_loss(logits, targets, *, class_weights=None, sample_weight=None, label_smoothing: float = 0.0):
    """Cross-entropy as a weighted mean, as cross_entropy's own: each example counts its class
    weight times its sample weight; `label_smoothing` spreads that share of each target over
    all labels (Szegedy et al.; a teacher's wrong label then pulls less)."""
    import torch

    weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
    per_example = torch.nn.functional.cross_entropy(
        logits, targets, weight=weight, reduction="none", label_smoothing=label_smoothing
    )
    w = (
        torch.ones_like(per_example)
        if sample_weight is None
        else sample_weight.to(logits.device, logits.dtype)
    )
    norm = w if weight is None else w * weight[targets]
    return (per_example * w).sum() / norm.sum().clamp(min=1e-6)


CALIBRATION_FILE = "calibration.json"


def calibrate(model_dir: Path, probabilities: np.ndarray, labels: list[str], names: list[str]) -> dict:
    """Fit a temperature on validation probabilities and keep it beside the model."""
    import json

    index = {name: i for i, name in enumerate(names)}
    known = [i for i, label in enumerate(labels) if label in index]
    fitted = stats.fit_temperature(
        np.log(np.clip(probabilities[known], 1e-30, None)), np.array([index[labels[i]] for i in known])
    )
    (Path(model_dir) / CALIBRATION_FILE).write_text(json.dumps(fitted, indent=1))
    return fitted


def temperature(model_dir: Path | str) -> float:
    """The fitted temperature of a saved model (1.0 when none was fitted)."""
    import json

    path = Path(model_dir) / CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0


def predict(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    """The predicted label and its softmax probability for each text."""
    probabilities, names = predict_proba(model_dir, texts, batch_size=batch_size, max_length=max_length)
    return stats.best_labels(probabilities, names)


def predict_proba(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[np.ndarray, list[str]]:
    import torch

    tokenizer, model = ml.load_saved(AUTO_CLASS, model_dir)
    t = temperature(model_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    out = np.empty((len(texts), len(names)), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True, max_length=max_length) if texts else {"input_ids": []}
    keys = [key for key in encoded if key in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.inference_mode():
        for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            batch = {key: torch.tensor([encoded[key][i] for i in idx], device=model.device) for key in keys}
            out[idx] = torch.softmax(model(**batch).logits.float() / t, dim=-1).cpu().numpy()
    return out, names


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    import shutil

    onnx_dir = ml.export_onnx_int8(model_dir, out_dir, max_length=max_length, auto_class=AUTO_CLASS)
    if (Path(model_dir) / CALIBRATION_FILE).is_file():  # the int8 model answers with the same temperature
        shutil.copy(Path(model_dir) / CALIBRATION_FILE, Path(onnx_dir) / CALIBRATION_FILE)
    return onnx_dir


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    """Like `predict`, from an `export_onnx` directory, on ONNX Runtime (no torch model)."""
    tokenizer, session, config = ml.load_onnx(onnx_dir)
    names = ml.label_names(config)
    t = temperature(onnx_dir)
    inputs = [i.name for i in session.get_inputs()]
    probabilities = np.empty((len(texts), len(names)), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True, max_length=max_length) if texts else {"input_ids": []}
    for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
        feed = {name: np.array([encoded[name][i] for i in idx], dtype=np.int64) for name in inputs}
        logits = session.run(["logits"], feed)[0].astype(np.float32) / t
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities[idx] = exp / exp.sum(axis=1, keepdims=True)
    return stats.best_labels(probabilities, names)
