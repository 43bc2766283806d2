"""Two classification students together: the weighted average of their probabilities.

A fine-tune and a quick student make different mistakes (one adapts the encoder, the
other keeps it frozen), so their average is more accurate than either (bench/README.md,
section "Banking77 distillation", "The two students together"). ``combine`` picks the weight on a validation split that neither member
trained on, never on gold, and writes ``ensemble.json`` into the model directory:
each member's kind, model directory and max_length, the weight on the first, and the
label names in column order. Prediction runs both members and averages.

It has the module interface of ``tasks.classification.student`` for prediction
(predict, predict_proba, export_onnx, predict_onnx); it is built by ``combine``, not
``train``, because it learns nothing but the weight.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from distillapp import ml
from tasks import stats
from tasks.classification import quick, student

CONFIG_FILE = "ensemble.json"
MEMBER_MODULES = {"finetune": student, "quick": quick}


def combine(
    *,
    members: list[dict],
    output_dir: Path,
    validation: tuple[list[str], list[str]],
    embedding_cache_dir: Path | None = None,
) -> ml.TrainResult:
    """Choose the weight of ``members[0]`` on `validation` (texts, labels) and save the ensemble.

    `members` are two dicts ``{"kind", "model_dir", "max_length"}`` (kinds of
    ``MEMBER_MODULES``). With no validation texts the weight is 0.5, the plain average.
    """
    if len(members) != 2:
        raise ValueError(f"An ensemble averages two runs, not {len(members)}.")
    for member in members:
        if member["kind"] not in MEMBER_MODULES:
            raise ValueError(f"A {member['kind']!r} run cannot be an ensemble member.")
    started = time.monotonic()
    texts, labels = list(validation[0]), list(validation[1])
    names = _names(members)
    weight = 0.5
    result = ml.TrainResult(device=ml.device(), seconds=0.0, steps=1, stopped_early=False)
    # With no validation text the members count alike (the plain average).
    result.validation = {"examples": 0, "weight": weight}
    if texts:
        first, second = (
            _member_proba(m, texts, names, embedding_cache_dir=embedding_cache_dir) for m in members
        )
        weight = quick.choose_weight(first, second, labels, names)
        averaged = quick.average_proba(first, second, weight)
        predicted = [names[i] for i in averaged.argmax(axis=1)]
        result.validation = {
            "examples": len(texts),
            "accuracy": sum(p == g for p, g in zip(predicted, labels, strict=True)) / len(texts),
            "weight": weight,
            "member_accuracy": [
                float(np.mean([names[i] == g for i, g in zip(p.argmax(axis=1), labels, strict=True)]))
                for p in (first, second)
            ],
        }
    output_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "kind": "ensemble",
        "members": [
            {"kind": m["kind"], "model_dir": str(m["model_dir"]), "max_length": int(m["max_length"])}
            for m in members
        ],
        "weight": weight,
        "names": names,
    }
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    result.seconds = time.monotonic() - started
    return result


def predict_proba(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    embedding_cache_dir: Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The averaged probabilities (n, len(names)); each member uses its own max_length."""
    config = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    names = config["names"]
    if not texts:
        return np.empty((0, len(names)), dtype=np.float32), names
    first, second = (
        _member_proba(m, texts, names, batch_size=batch_size, embedding_cache_dir=embedding_cache_dir)
        for m in config["members"]
    )
    return quick.average_proba(first, second, config["weight"]).astype(np.float32), names


def predict(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    embedding_cache_dir: Path | None = None,
) -> tuple[list[str], list[float]]:
    probabilities, names = predict_proba(
        model_dir, texts, batch_size=batch_size, embedding_cache_dir=embedding_cache_dir
    )
    return stats.best_labels(probabilities, names)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    raise NotImplementedError("An ensemble has no ONNX export: it is served from its two members.")


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[str], list[float]]:
    raise NotImplementedError("An ensemble has no ONNX export; use predict().")


def member_names(member: dict) -> list[str]:
    """The label names a member's head was trained for, in its column order."""
    model_dir = Path(member["model_dir"])
    if member["kind"] == "quick":
        return list(quick.load(model_dir)[1]["names"])
    config = json.loads((model_dir / "config.json").read_text())
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def _names(members: list[dict]) -> list[str]:
    # The first member's columns, then any label only the second knows.
    names = member_names(members[0])
    return names + [n for n in member_names(members[1]) if n not in names]


def _member_proba(
    member: dict,
    texts: list[str],
    names: list[str],
    *,
    batch_size: int = 64,
    embedding_cache_dir: Path | None = None,
) -> np.ndarray:
    module = MEMBER_MODULES[member["kind"]]
    options = {"embedding_cache_dir": embedding_cache_dir} if module is quick else {}
    probabilities, own = module.predict_proba(
        member["model_dir"], texts, batch_size=batch_size, max_length=member["max_length"], **options
    )
    return quick.align_proba(probabilities, own, names)
