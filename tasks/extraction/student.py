"""The extraction student: a token-classification head (BIO over the fields) on the base model.

Labels are ``O``, then ``B-<field>`` and ``I-<field>`` for each field. Every sub-token a span
overlaps is labelled; tags are decoded as the most probable valid BIO sequence
(``best_path``), a span grown to whole words and grapheme clusters, overlapping spans keep
the first (as the CoNLL writer does). Capitals ride on the token type ids (``case_feature``,
saved in the model's config) because the bundled MiniLM is uncased. A long text is cut into
windows overlapping by half a window; a token takes the window where it lies furthest from
an edge. A span's confidence is the min over its tokens, a text's the min over all of them.
Why each rule, with its measurements: bench/README.md, section "Extraction students".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from distillapp import ml
from tasks.extraction.spans import without_overlaps

AUTO_CLASS = "AutoModelForTokenClassification"
IGNORE = -100  # transformers' ignore_index: no loss on this token


def bio_labels(names: Sequence[str]) -> list[str]:
    return ["O"] + [f"{prefix}-{name}" for name in names for prefix in ("B", "I")]


def _overlap(max_length: int) -> int:
    # Half of the window's text tokens ([CLS] and [SEP] take two places).
    return max(0, (max_length - 2) // 2)


def _windows(tokenizer, texts: list[str], max_length: int, *, capitals: bool = False):
    """Every text as one or more overlapping windows (a BatchEncoding; its
    ``overflow_to_sample_mapping`` says whose window each row is). With `capitals`, the
    token types mark the tokens that start with a capital letter (module docstring)."""
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        stride=_overlap(max_length),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    if capitals:
        encoded["token_type_ids"] = [
            [int(end > start and texts[text_index][start].isupper()) for start, end in offsets]
            for offsets, text_index in zip(
                encoded["offset_mapping"], encoded["overflow_to_sample_mapping"], strict=True
            )
        ]
    return encoded


def _capitals(config) -> bool:
    return bool(getattr(config, "case_feature", False))


def _content(encoded, window: int) -> list[int]:
    """Positions of the text's own tokens in a window (not [CLS], [SEP] or padding)."""
    return [i for i, sequence in enumerate(encoded.sequence_ids(window)) if sequence == 0]


def _by_text(encoded, count: int) -> list[list[int]]:
    windows: list[list[int]] = [[] for _ in range(count)]
    for window, text_index in enumerate(encoded["overflow_to_sample_mapping"]):
        windows[text_index].append(window)
    return windows


# --- training ---------------------------------------------------------------------------


def token_labels(
    encoded,
    texts: list[str],
    answers: list[Mapping],
    label2id: dict[str, int],
    ignore: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> list[list[int]]:
    """One label id per token of every window (IGNORE for special tokens and cut spans, and
    for the tokens of the character ranges `ignore` holds for their text)."""
    labels: list[list[int]] = [[IGNORE] * len(ids) for ids in encoded["input_ids"]]
    for text_index, windows in enumerate(_by_text(encoded, len(texts))):
        spans = without_overlaps(answers[text_index].get("spans", []))
        for span in spans:
            if f"B-{span['field']}" not in label2id:
                raise ValueError(
                    f"a span names the field {span['field']!r}, which is not one of the student's fields"
                )
        _label_text(encoded, windows, spans, labels, label2id)
        for start, end in (ignore[text_index] if ignore else ()):
            for w in windows:
                for i in _content(encoded, w):
                    token_start, token_end = encoded["offset_mapping"][w][i]
                    if token_start < end and token_end > start:
                        labels[w][i] = IGNORE
    return labels


def _label_text(encoded, windows: list[int], spans: list[Mapping], labels: list[list[int]], label2id) -> None:
    offsets = {w: encoded["offset_mapping"][w] for w in windows}
    positions = {w: _content(encoded, w) for w in windows}
    for w in windows:
        for i in positions[w]:
            labels[w][i] = label2id["O"]

    def holds(w: int, span: Mapping) -> bool:
        inner = positions[w]
        if not inner:
            return False
        left = w == windows[0] or offsets[w][inner[0]][0] <= span["start"]
        right = w == windows[-1] or offsets[w][inner[-1]][1] >= span["end"]
        return left and right

    for span in spans:
        whole_somewhere = any(holds(w, span) for w in windows)
        for w in windows:
            inside = [
                i for i in positions[w] if offsets[w][i][0] < span["end"] and offsets[w][i][1] > span["start"]
            ]
            if not inside:
                continue
            if holds(w, span):
                tags = ["B"] + ["I"] * (len(inside) - 1)
            elif whole_somewhere:
                tags = [None] * len(inside)
            else:  # longer than a window: label it where it falls
                tags = ["B" if offsets[w][i][0] <= span["start"] else "I" for i in inside]
            for i, tag in zip(inside, tags, strict=True):
                labels[w][i] = IGNORE if tag is None else label2id[f"{tag}-{span['field']}"]


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
    ignore: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> ml.TrainResult:
    """Fine-tune `base_model` to mark the `names` fields; `answers` are ``{"spans": [...]}``;
    `ignore` (character ranges, one list per text) takes the tokens they overlap out of the
    loss (noise handling "mask").

    ``result.validation`` holds the strict (and partial) entity micro-F1 on `validation`.
    """
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        set_seed,
    )

    hp = hyperparameters
    set_seed(hp.seed)
    labels = bio_labels(names)
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForTokenClassification.from_pretrained(
        base_model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    if hp.case_feature:
        if getattr(model.config, "type_vocab_size", 0) < 2:
            raise ValueError(
                f"{base_model} has no second token type to mark capitals with; train it without the case feature"
            )
        model.config.case_feature = True  # saved with the model: prediction marks the same tokens
    encoded = _windows(tokenizer, list(texts), hp.max_length, capitals=hp.case_feature)
    train_set = ml.LabelledEncodings(
        encoded, token_labels(encoded, list(texts), list(answers), label2id, ignore=ignore)
    )
    compute_loss = None
    if hp.class_weighting:
        seen = torch.tensor([label for row in train_set.labels for label in row if label != IGNORE])
        counts = torch.bincount(seen, minlength=len(labels)).float()
        weights = counts.sum() / (len(labels) * counts.clamp(min=1))

        def compute_loss(model, inputs):
            targets = inputs.pop("labels")
            outputs = model(**inputs)
            loss = torch.nn.functional.cross_entropy(
                outputs.logits.flatten(0, 1),
                targets.flatten(),
                weight=weights.to(outputs.logits.device, outputs.logits.dtype),
                ignore_index=IGNORE,
            )
            return loss, outputs

    result = ml.fit(
        model=model,
        tokenizer=tokenizer,
        train_set=train_set,
        collator=DataCollatorForTokenClassification(tokenizer),
        output_dir=output_dir,
        hyperparameters=hp,
        on_progress=on_progress,
        should_stop=should_stop,
        compute_loss=compute_loss,
    )
    if validation and validation[0]:
        from tasks.extraction.measure import entity_scores

        predicted, _ = predict(output_dir, validation[0], max_length=hp.max_length)
        scores = entity_scores(validation[1], predicted, names)
        result.validation = {
            "examples": len(validation[0]),
            "strict_f1": scores["strict"]["micro"]["f1"],
            "partial_f1": scores["partial"]["micro"]["f1"],
        }
    return result


# --- prediction -------------------------------------------------------------------------


def predict(
    model_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[dict], list[float]]:
    """Each text's answer ``{"spans": [{"start", "end", "field", "confidence"}]}`` and its confidence."""
    import torch

    tokenizer, model = ml.load_saved(AUTO_CLASS, model_dir)

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        batch = {key: torch.tensor(value, device=model.device) for key, value in feed.items()}
        with torch.inference_mode():
            return torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy()

    keys = ("input_ids", "token_type_ids", "attention_mask")
    return _predict(tokenizer, run, keys, model.config, texts, batch_size=batch_size, max_length=max_length)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    return ml.export_onnx_int8(model_dir, out_dir, max_length=max_length, auto_class=AUTO_CLASS)


def predict_onnx(
    onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128
) -> tuple[list[dict], list[float]]:
    """Like `predict`, from an `export_onnx` directory, on ONNX Runtime (no torch model)."""
    tokenizer, session, config = ml.load_onnx(onnx_dir)

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        logits = session.run(["logits"], feed)[0].astype(np.float32)
        logits -= logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=-1, keepdims=True)

    keys = tuple(i.name for i in session.get_inputs())
    return _predict(tokenizer, run, keys, config, texts, batch_size=batch_size, max_length=max_length)


def _predict(
    tokenizer,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    keys: Sequence[str],
    config,
    texts: list[str],
    *,
    batch_size: int,
    max_length: int,
) -> tuple[list[dict], list[float]]:
    """Token probabilities of every window from `run` (a batch of windows in, their
    softmax out), merged per text and decoded to spans. The saved model's `config` names
    the labels and says whether capitals are marked."""
    if not texts:
        return [], []
    labels = ml.label_names(config)
    encoded = _windows(tokenizer, list(texts), max_length, capitals=_capitals(config))
    keys = [key for key in keys if key in encoded]
    probabilities: list[np.ndarray | None] = [None] * len(encoded["input_ids"])
    for idx in ml.same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
        feed = {key: np.array([encoded[key][i] for i in idx], dtype=np.int64) for key in keys}
        for i, row in zip(idx, run(feed), strict=True):
            probabilities[i] = row
    return merge(encoded, probabilities, texts, labels)


def merge(
    encoded, probabilities: Sequence[np.ndarray], texts: list[str], labels: list[str]
) -> tuple[list[dict], list[float]]:
    """Each text's answer and confidence from its windows' token probabilities: a token seen
    by several windows takes the window where it lies furthest from an edge."""
    answers, confidences = [], []
    for text_index, windows in enumerate(_by_text(encoded, len(texts))):
        # (start, end) of each token -> (its distance from the nearest window edge, probabilities)
        best: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
        # The word of each token, and each word's (start, end): word ids count the words of
        # the whole text, so a word cut by a window's edge is still one word.
        word_of: dict[tuple[int, int], int] = {}
        extent: dict[int, tuple[int, int]] = {}
        for w in windows:
            inner = _content(encoded, w)
            word_ids = encoded.word_ids(w)
            for k, i in enumerate(inner):
                offset = tuple(encoded["offset_mapping"][w][i])
                context = min(k, len(inner) - 1 - k)
                if offset not in best or context > best[offset][0]:
                    best[offset] = (context, probabilities[w][i])
                word = word_of[offset] = word_ids[i]
                start, end = extent.get(word, offset)
                extent[word] = (min(start, offset[0]), max(end, offset[1]))
        offsets = sorted(best)
        rows = np.array([best[o][1] for o in offsets]).reshape(len(offsets), len(labels))
        words = [extent[word_of[o]] for o in offsets]
        answer, confidence = decode(texts[text_index], offsets, rows, labels, words=words)
        answers.append(answer)
        confidences.append(confidence)
    return answers, confidences


def decode(
    text: str,
    offsets: Sequence[tuple[int, int]],
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    words: Sequence[tuple[int, int]] | None = None,
) -> tuple[dict, float]:
    """BIO token predictions (tokens in text order) as character spans with confidences, and
    the text's confidence (see the module docstring). `words` gives each token's word as
    (start, end): spans grow to whole words; without it they keep their tokens' bounds."""
    choice = best_path(probabilities, labels) if len(offsets) else np.array([], dtype=int)
    sure = probabilities[np.arange(len(offsets)), choice] if len(offsets) else np.array([])
    bounds = words if words is not None else offsets
    spans: list[dict] = []
    current: dict | None = None
    for (start, end), label_id, p in zip(bounds, choice, sure, strict=True):
        prefix, _, field = labels[label_id].partition("-")
        if prefix == "I" and current is not None and current["field"] == field:
            current["end"] = max(current["end"], end)
            current["confidence"] = min(current["confidence"], float(p))
            continue
        if current is not None:
            spans.append(current)
        current = None
        if prefix == "O":
            continue
        if spans and start < spans[-1]["end"]:  # another run in the same word: it joins that span
            current = spans.pop()
            current["end"] = max(current["end"], end)
            current["confidence"] = min(current["confidence"], float(p))
        else:
            current = {"start": start, "end": end, "field": field, "confidence": float(p)}
    if current is not None:
        spans.append(current)
    if spans and not text.isascii():
        spans = _whole_clusters(text, spans)
    return {"spans": spans}, float(sure.min()) if len(sure) else 1.0


def best_path(probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The label ids of the most probable BIO sequence (Viterbi, the sum of the tokens'
    log-probabilities) among those where each ``I-f`` follows ``B-f`` or ``I-f``."""
    count = len(labels)
    prefix = [label.partition("-")[0] for label in labels]
    field = [label.partition("-")[2] for label in labels]
    allowed = np.array(
        [
            [prefix[b] != "I" or (prefix[a] in ("B", "I") and field[a] == field[b]) for b in range(count)]
            for a in range(count)
        ]
    )
    moves = np.where(allowed, 0.0, -np.inf)
    log_p = np.log(np.clip(probabilities.astype(np.float64), 1e-12, None))
    score = np.where([p != "I" for p in prefix], log_p[0], -np.inf)
    back = np.zeros((len(log_p), count), dtype=np.intp)
    for t in range(1, len(log_p)):
        candidates = score[:, None] + moves  # (from, to)
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_p[t]
    path = np.zeros(len(log_p), dtype=np.intp)
    path[-1] = int(score.argmax())
    for t in range(len(log_p) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _whole_clusters(text: str, spans: list[dict]) -> list[dict]:
    # Grow each span to whole grapheme clusters: "Café" written with a combining accent is
    # one token that ends before the accent.
    import regex

    starts = [m.start() for m in regex.finditer(r"\X", text)]
    ends = starts[1:] + [len(text)]
    for span in spans:
        span["start"] = starts[bisect.bisect_right(starts, span["start"]) - 1]
        span["end"] = ends[bisect.bisect_right(starts, span["end"] - 1) - 1]
    return spans
