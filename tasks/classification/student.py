"""The classification student: a sequence-classification head on the base model.

Training goes through the shared loop (``distillapp.ml.fit``); prediction returns each
text's label and its softmax probability, from the torch model or its ONNX int8 export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from distillapp import ml

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
) -> ml.TrainResult:
    """Fine-tune `base_model` to tell the `names` apart; `answers` are label names."""
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
        tokenizer(texts, truncation=True, max_length=hp.max_length), [label2id[label] for label in answers]
    )
    compute_loss = None
    if hp.class_weighting:
        counts = torch.bincount(torch.tensor(train_set.labels), minlength=len(names)).float()
        weights = counts.sum() / (len(names) * counts.clamp(min=1))

        def compute_loss(model, inputs):
            targets = inputs.pop("labels")
            outputs = model(**inputs)
            loss = torch.nn.functional.cross_entropy(
                outputs.logits, targets, weight=weights.to(outputs.logits.device, outputs.logits.dtype)
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
        predicted, _ = predict(output_dir, validation[0], max_length=hp.max_length)
        correct = sum(p == g for p, g in zip(predicted, validation[1], strict=True))
        result.validation = {"examples": len(validation[0]), "accuracy": correct / len(validation[0])}
    return result


def predict(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    """The predicted label and its softmax probability for each text."""
    probabilities, names = predict_proba(model_dir, texts, batch_size=batch_size, max_length=max_length)
    return _best(probabilities, names)


def predict_proba(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[np.ndarray, list[str]]:
    import torch

    tokenizer, model = ml.load_saved(AUTO_CLASS, model_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    out = np.empty((len(texts), len(names)), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True, max_length=max_length) if texts else {"input_ids": []}
    keys = [key for key in encoded if key in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.inference_mode():
        for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            batch = {key: torch.tensor([encoded[key][i] for i in idx], device=model.device) for key in keys}
            out[idx] = torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy()
    return out, names


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    return ml.export_onnx_int8(model_dir, out_dir, max_length=max_length, auto_class=AUTO_CLASS)


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    """Like `predict`, from an `export_onnx` directory, on ONNX Runtime (no torch model)."""
    tokenizer, session, names = ml.load_onnx(onnx_dir)
    inputs = [i.name for i in session.get_inputs()]
    probabilities = np.empty((len(texts), len(names)), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True, max_length=max_length) if texts else {"input_ids": []}
    for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
        feed = {name: np.array([encoded[name][i] for i in idx], dtype=np.int64) for name in inputs}
        logits = session.run(["logits"], feed)[0].astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities[idx] = exp / exp.sum(axis=1, keepdims=True)
    return _best(probabilities, names)


def _best(probabilities: np.ndarray, names: list[str]) -> tuple[list[str], list[float]]:
    best = probabilities.argmax(axis=1) if len(probabilities) else np.array([], dtype=int)
    return [names[i] for i in best], [float(probabilities[row, i]) for row, i in enumerate(best)]
