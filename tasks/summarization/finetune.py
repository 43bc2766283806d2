"""The summarisation fine-tune: extractive on an encoder, abstractive on a seq2seq checkpoint.

One run kind serves both, so the launch form, progress, cancel, manifest and serving are
the same: the base model decides. An encoder (the bundled MiniLM, BERT) trains the
extractive student (``student``: scores sentences or dialogue turns, selects up to the
target length); a seq2seq checkpoint an operator allows (t5-small, flan-t5-base,
bart-base) trains the abstractive one (``seq2seq``). A saved model says which it is in
its config.json (``is_encoder_decoder``).
"""

from __future__ import annotations

import json
from pathlib import Path

from distillapp import ml


def _kind(model_dir: Path | str):
    config = Path(model_dir) / "config.json"
    seq2seq = config.exists() and json.loads(config.read_text()).get("is_encoder_decoder", False)
    if seq2seq:
        from tasks.summarization import seq2seq as module
    else:
        from tasks.summarization import student as module
    return module


def train(*, base_model: str, **kwargs) -> ml.TrainResult:
    if ml.is_encoder_decoder(base_model):
        from tasks.summarization import seq2seq as module
    else:
        from tasks.summarization import student as module
    return module.train(base_model=base_model, **kwargs)


def predict(model_dir: Path | str, texts: list[str], **kwargs):
    return _kind(model_dir).predict(model_dir, texts, **kwargs)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    return _kind(model_dir).export_onnx(model_dir, out_dir, max_length=max_length)


def predict_onnx(onnx_dir: Path | str, texts: list[str], **kwargs):
    return _kind(onnx_dir).predict_onnx(onnx_dir, texts, **kwargs)
