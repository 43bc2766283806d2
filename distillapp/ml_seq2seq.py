"""The seq2seq half of the torch/transformers boundary: summarisation's abstractive student trains
and generates through it (``ml`` re-exports its names). Loaded lazily, like ``ml``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distillapp import ml


def make_tiny_seq2seq(directory: Path) -> str:
    """A tiny random T5 with the bundled tokenizer, for tests ([PAD] starts a text, [SEP] ends it)."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(ml.default_base_model())
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def task_prefix(model_name: str, task: str) -> str:
    """The text a checkpoint's config puts before its inputs for `task` (t5-small: "summarize: ")."""
    from transformers import AutoConfig

    params = getattr(AutoConfig.from_pretrained(model_name), "task_specific_params", None) or {}
    return (params.get(task) or {}).get("prefix", "")


def fit_seq2seq(
    *,
    base_model: str,
    sources: list[str],
    targets: list[str],
    output_dir: Path,
    hyperparameters: ml.Hyperparameters,
    target_max_length: int,
    on_progress: Callable[[ml.Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ml.TrainResult:
    """Fine-tune a seq2seq checkpoint to write `targets` from `sources` (`fit`'s loop, with
    transformers' seq2seq collator: labels padded with -100); sources are cut at
    ``max_length`` tokens, targets at `target_max_length`."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, set_seed

    hp = hyperparameters
    set_seed(hp.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSeq2SeqLM.from_pretrained(base_model)
    # Seq2seq models take no token types (a BERT tokenizer would add them).
    columns = tokenizer(sources, truncation=True, max_length=hp.max_length, return_token_type_ids=False)
    labels = tokenizer(
        text_target=targets, truncation=True, max_length=target_max_length, return_token_type_ids=False
    )["input_ids"]
    return ml.fit(
        model=model,
        tokenizer=tokenizer,
        train_set=ml.LabelledEncodings(columns, labels),
        collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        output_dir=output_dir,
        hyperparameters=hp,
        on_progress=on_progress,
        should_stop=should_stop,
    )


def generate(
    model_dir: Path | str,
    texts: list[str],
    *,
    max_length: int,
    max_new_tokens: int,
    num_beams: int = 4,
    batch_size: int = 16,
) -> tuple[list[str], list[float]]:
    """A saved seq2seq model's beam-search output for each text and its mean token
    log-probability (the generated tokens, end token included, scored again by the model)."""
    import torch

    tokenizer, model = ml.load_saved("AutoModelForSeq2SeqLM", model_dir)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: dict[int, tuple[str, float]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            ).to(model.device)
            sequences = model.generate(
                **batch, max_new_tokens=max_new_tokens, num_beams=num_beams, early_stopping=True
            )
            # Teacher-forced again: the log-probability of each generated token (after the start token).
            labels = sequences[:, 1:]
            mask = labels != model.config.pad_token_id
            logits = model(**batch, decoder_input_ids=sequences[:, :-1]).logits.float()
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            means = (token_logprobs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            decoded = tokenizer.batch_decode(sequences, skip_special_tokens=True)
            for i, text, mean in zip(idx, decoded, means.tolist(), strict=True):
                results[i] = (text.strip(), float(mean))
    return [results[i][0] for i in range(len(texts))], [results[i][1] for i in range(len(texts))]


def is_encoder_decoder(model_name: str) -> bool:
    """Is this checkpoint a seq2seq model (T5, BART) rather than an encoder (BERT)?"""
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(model_name), "is_encoder_decoder", False))
