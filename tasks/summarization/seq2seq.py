"""The abstractive summarisation student (run kind "abstractive"): a seq2seq checkpoint
(t5-small, flan-t5-base, bart-base: any ``AutoModelForSeq2SeqLM`` an operator allows)
fine-tuned on the texts and their summaries through ``ml.fit``, with beam search at
prediction.

A T5 checkpoint that names a summarisation prefix in its config (t5-small's
"summarize: ") gets it before every text, in training and prediction alike. Inputs are cut
at ``max_length`` tokens (a DialogSum dialogue is ~250 tokens: train with 512 for real);
summaries at ``SUMMARY_TOKENS``. How much to generate comes from the target: ``length``
words take up to 2 tokens each, sentences up to 40 tokens each, plus 8.

Confidence: exp of the mean log-probability of the generated tokens (``ml.generate``): the
model's per-token certainty, in (0, 1]; not calibrated against reviews.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from distillapp import ml
from tasks.summarization.units import clean_target

AUTO_CLASS = "AutoModelForSeq2SeqLM"
CONFIG_FILE = "summarization.json"
SUMMARY_TOKENS = 128
NUM_BEAMS = 4


def max_new_tokens(target: Mapping | None) -> int:
    target = clean_target(target)
    per_unit = 2 if target["unit"] == "words" else 40
    return min(target["length"] * per_unit + 8, 512)


def train(
    *,
    texts: list[str],
    answers: list[Mapping],
    names: list[str] | None = None,
    base_model: str,
    output_dir: Path,
    hyperparameters: ml.Hyperparameters,
    validation: tuple[list[str], list[Mapping]] | None = None,
    on_progress: Callable[[ml.Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    target: Mapping | None = None,
    **_,
) -> ml.TrainResult:
    """Fine-tune `base_model` to write each text's ``answers[i]["summary"]``.

    ``result.validation`` holds the ROUGE-1/2/L F of the generated summaries on `validation`.
    """
    hp = hyperparameters
    target = clean_target(target)
    prefix = ml.task_prefix(base_model, "summarization")
    pairs = [(t, a["summary"]) for t, a in zip(texts, answers, strict=True) if a and a.get("summary")]
    if not pairs:
        raise ValueError("no text with a summary to learn from")
    result = ml.fit_seq2seq(
        base_model=base_model,
        sources=[prefix + t for t, _ in pairs],
        targets=[s for _, s in pairs],
        output_dir=Path(output_dir),
        hyperparameters=hp,
        target_max_length=SUMMARY_TOKENS,
        on_progress=on_progress,
        should_stop=should_stop,
    )
    settings = {"target": target, "max_length": hp.max_length, "prefix": prefix}
    (Path(output_dir) / CONFIG_FILE).write_text(json.dumps(settings, indent=2))
    if validation and validation[0]:
        from tasks.summarization import measure
        from tasks.summarization.task import RIGHT_FLOOR

        val = [(t, a["summary"]) for t, a in zip(*validation, strict=True) if a and a.get("summary")]
        predicted, confidences = predict(output_dir, [t for t, _ in val])
        scores = [measure.rouge([s], p["summary"]) for (_, s), p in zip(val, predicted, strict=True)]
        result.validation = {
            "examples": len(val),
            **{m: sum(s[m] for s in scores) / len(scores) for m in measure.MEASURES},
        }
        # The mean token probability as how often a summary that sure reached ROUGE-L's floor.
        settings["calibration"] = measure.calibration_map(
            confidences, [s["rougeL"] >= RIGHT_FLOOR for s in scores]
        )
        (Path(output_dir) / CONFIG_FILE).write_text(json.dumps(settings, indent=2))
        result.validation["calibrated"] = settings["calibration"] is not None
    return result


def predict(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 16, max_length: int | None = None
) -> tuple[list[dict], list[float]]:
    """Each text's ``{"summary": ...}`` by beam search, and exp(mean token log-probability).

    Inputs are cut at the training's `max_length` unless another is given.
    """
    if not texts:
        return [], []
    settings = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    outputs, logprobs = ml.generate(
        model_dir,
        [settings["prefix"] + t for t in texts],
        max_length=max_length or settings["max_length"],
        max_new_tokens=max_new_tokens(settings["target"]),
        num_beams=NUM_BEAMS,
        batch_size=batch_size,
    )
    from tasks.summarization import measure

    raw = [min(1.0, math.exp(lp)) for lp in logprobs]
    # Calibrated on validation where training could (measure.calibration_map), else raw.
    return [{"summary": o} for o in outputs], measure.calibrated(raw, settings.get("calibration"))


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    raise ValueError("int8 (ONNX) serving is not offered for the abstractive summarisation student.")


def predict_onnx(onnx_dir: Path | str, texts: list[str], *, batch_size: int = 16, max_length: int = 128):
    raise ValueError("int8 (ONNX) serving is not offered for the abstractive summarisation student.")
