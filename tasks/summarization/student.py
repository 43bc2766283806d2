"""The extractive summarisation student: units (turns or sentences) scored by a linear head
over their words and place in the text; the best kept up to a learned length, in document order.

Labels are each text's greedy ROUGE oracle units (``measure.oracle_units``). Features are
hashed words and word pairs plus position, length, overlap with the rest of the text,
similarity to the whole, question and opening speaker; a logistic regression scores them.
The length rule (the target, 1-4 units or 15-60 words) is chosen on validation texts to
maximise ROUGE-1 F; the confidence is (margin + 1) / 2 between the weakest kept unit and the
strongest left out. A dialogue's kept turns are rewritten in the third person
(``units.rewrite_turn``), as DialogSum's references are. It does not read the base model:
why, with the measurements, in bench/README.md, section "Summarisation students".
Hyperparameters used: ``seed`` (the rest are for fine-tunes).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from distillapp import ml
from tasks.summarization import measure
from tasks.summarization.units import (
    clean_target,
    fit_to_target,
    is_dialogue,
    join_units,
    rewrite_summary,
    rewrite_turn,
    speakers,
    split_units,
    word_count,
)

CONFIG_FILE = "extractive.json"
HEAD_FILE = "head.joblib"
RULES = [{"unit": "units", "length": n} for n in (1, 2, 3, 4)] + [
    {"unit": "words", "length": n} for n in (15, 20, 25, 30, 40, 60)
]
HASHED_FEATURES = 2**18
C = 0.3  # the logistic regression's inverse regularisation (0.1 and 1.0 within 0.3 ROUGE-1)
LABEL_CHUNK = 500  # texts labelled between progress reports
_SPEAKER = re.compile(r"^\s*([^:\n]{1,40}):")
_STOP = frozenset(
    "a an the and or but i you he she it we they me him her us them my your to of in on at for with is are "
    "was were be been do does did have has had not no yes so that this what well oh ok okay can will would "
    "just there here then than as if all".split()
)


def _scalars(unit_texts: list[str]) -> np.ndarray:
    """A text's units' scalar features (module docstring), one row per unit."""
    n = len(unit_texts)
    tokens = [measure.tokens(u) for u in unit_texts]
    words = [set(t) - _STOP for t in tokens]
    counts = np.array([word_count(u) for u in unit_texts], dtype=float)
    everywhere: dict[str, int] = {}
    for own in words:
        for w in own:
            everywhere[w] = everywhere.get(w, 0) + 1
    # Share of a unit's content words that other units use too; their mean spread (centrality).
    shared = np.array([sum(everywhere[w] > 1 for w in own) / len(own) if own else 0.0 for own in words])
    centrality = np.array([sum(everywhere[w] - 1 for w in own) / max(n - 1, 1) for own in words])
    speakers = [_SPEAKER.match(u) for u in unit_texts]
    first_speaker = speakers[0].group(1) if speakers and speakers[0] else None
    position = np.arange(n, dtype=float)
    return np.column_stack(
        [
            position / max(n - 1, 1),
            np.minimum(position, 10) / 10,
            position == 0,
            position == 1,
            position == n - 1,
            np.full(n, min(n, 30) / 30),
            np.log1p(counts),
            counts / max(counts.sum(), 1.0),
            shared,
            np.log1p(centrality),
            np.array([len(w) for w in words], dtype=float) / 10,
            np.array(["?" in u for u in unit_texts], dtype=float),
            np.array([bool(s) and s.group(1) == first_speaker for s in speakers], dtype=float),
        ]
    ).astype(np.float32)


def _hasher():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=HASHED_FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm="l2",
        token_pattern=r"(?u)\b\w+\b",
    )


def features(unit_lists: Sequence[list[str]], scaler=None):
    """The (sparse) feature rows of every unit of every text, in order; the scalars are
    standardised by `scaler` (fitted here when None: returned with the rows)."""
    import scipy.sparse
    from sklearn.preprocessing import StandardScaler

    flat = [u for units in unit_lists for u in units]
    scalars = np.vstack([_scalars(units) for units in unit_lists if units])
    scaler = scaler or StandardScaler().fit(scalars)
    rows = scipy.sparse.hstack(
        [_hasher().transform(flat), scipy.sparse.csr_matrix(scaler.transform(scalars))]
    )
    return rows.tocsr(), scaler


def _units(texts: Sequence[str]) -> tuple[list[list[tuple[int, int]]], list[list[str]]]:
    spans = [split_units(text) for text in texts]
    return spans, [[text[s:e] for s, e in sp] for text, sp in zip(texts, spans, strict=True)]


def _as_summarised(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
    """`text` and its units' spans as a summary shows them: a dialogue's turns rewritten
    (``rewrite_turn``), one a line, so the oracle labels the turns whose rewrite matches the
    reference best (dev ROUGE-1 +0.1, test +0.5 at 3,000 train dialogues); other texts as
    they are."""
    if not is_dialogue(text):
        return text, spans
    tags = speakers(text)
    turns = [rewrite_turn(text[start:end], tags) for start, end in spans]
    starts = np.cumsum([0] + [len(t) + 1 for t in turns[:-1]])
    return "\n".join(turns), [(int(s), int(s) + len(t)) for s, t in zip(starts, turns, strict=True)]


class FirstUnits:
    """The head of a training set whose labels are all the same: one probability for every unit."""

    def __init__(self, probability: float):
        self.probability = probability

    def predict_proba(self, rows) -> np.ndarray:
        p = np.full(rows.shape[0], self.probability)
        return np.stack([1 - p, p], axis=1)


def _choose(probabilities: np.ndarray, units: list[str], rule: Mapping) -> list[int]:
    ranked = [int(i) for i in np.argsort(-probabilities, kind="stable")]
    if rule["unit"] == "units":
        return sorted(ranked[: rule["length"]])
    return fit_to_target(units, ranked, rule)


def _confidence(probabilities: np.ndarray, kept: list[int]) -> float:
    left = np.delete(probabilities, kept)
    if not len(left) or not kept:
        return 1.0
    return float((probabilities[kept].min() - left.max() + 1) / 2)


def train(
    *,
    texts: list[str],
    answers: list[Mapping],
    names: list[str] | None = None,
    base_model: str = "",
    output_dir: Path,
    hyperparameters: ml.Hyperparameters,
    validation: tuple[list[str], list[Mapping]] | None = None,
    on_progress: Callable[[ml.Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    target: Mapping | None = None,
    **_,
) -> ml.TrainResult:
    """Learn to pick each text's oracle units; `answers` are ``{"summary": ...}``.

    Progress counts the texts labelled (the oracle is most of the time), then one step for
    the fit. ``result.validation`` holds the ROUGE-1/2/L F on `validation` and the chosen
    length rule; ``result.steps`` the texts learnt from.
    """
    import joblib
    from sklearn.linear_model import LogisticRegression

    started = time.monotonic()
    target = clean_target(target)
    pairs = [(t, a["summary"]) for t, a in zip(texts, answers, strict=True) if a and a.get("summary")]
    spans, unit_lists = _units([t for t, _ in pairs])
    kept = [i for i, units in enumerate(unit_lists) if units]
    if not kept:
        raise ValueError("no text with a summary and at least one unit to learn from")
    total = -(-len(kept) // LABEL_CHUNK) + 1
    labels: list[bool] = []
    for step, first in enumerate(range(0, len(kept), LABEL_CHUNK), start=1):
        if should_stop is not None and should_stop():
            raise ml.Stopped()
        for i in kept[first : first + LABEL_CHUNK]:
            chosen = set(measure.oracle_units(*_as_summarised(pairs[i][0], spans[i]), pairs[i][1]))
            labels += [j in chosen for j in range(len(unit_lists[i]))]
        if on_progress is not None:
            on_progress(ml.Progress(step=step, total_steps=total, epoch=step / total, loss=None))
    rows, scaler = features([unit_lists[i] for i in kept])
    if len(set(labels)) < 2:
        # Every unit of every text is in (or out of) its oracle: nothing to tell apart, so the
        # units keep their order (the first ones first) until more varied summaries come.
        head = FirstUnits(float(labels[0]) if labels else 0.0)
    else:
        head = LogisticRegression(C=C, solver="liblinear", max_iter=3000, random_state=hyperparameters.seed)
        head.fit(rows, np.array(labels, dtype=int))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump({"scaler": scaler, "head": head}, output_dir / HEAD_FILE)
    config = {"target": target, "rule": target, "rewrite": True}
    result_validation: dict = {}
    if validation and validation[0]:
        val = [(t, a["summary"]) for t, a in zip(*validation, strict=True) if a and a.get("summary")]
        probabilities, val_units = _probabilities({"scaler": scaler, "head": head}, [t for t, _ in val])
        best = None
        for rule in [target] + RULES:
            picks = [
                rewrite_summary(t, sp, _choose(p, u, rule)) if u else ""
                for (t, _), (sp, u), p in zip(val, val_units, probabilities, strict=True)
            ]
            scores = [measure.rouge([s], pick) for (_, s), pick in zip(val, picks, strict=True)]
            mean = {m: float(np.mean([s[m] for s in scores])) for m in measure.MEASURES}
            if best is None or mean["rouge1"] > best[1]["rouge1"]:
                best = (rule, mean)
        config["rule"] = best[0]
        result_validation = {"examples": len(val), **best[1], "rule": best[0]}
        config["calibration"] = calibrate(val, val_units, probabilities, best[0])
        result_validation["calibrated"] = config["calibration"] is not None
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    if on_progress is not None:
        on_progress(ml.Progress(step=total, total_steps=total, epoch=1.0, loss=None))
    return ml.TrainResult(
        device="cpu",
        seconds=time.monotonic() - started,
        steps=len(kept),
        stopped_early=False,
        validation=result_validation,
    )


def _probabilities(saved: Mapping, texts: list[str]):
    spans, unit_lists = _units(texts)
    out = [np.zeros(0) for _ in texts]
    if any(unit_lists):
        rows, _ = features(unit_lists, saved["scaler"])
        flat = saved["head"].predict_proba(rows)[:, 1]
        start = 0
        for i, units in enumerate(unit_lists):
            out[i] = flat[start : start + len(units)]
            start += len(units)
    return out, list(zip(spans, unit_lists, strict=True))


def load(model_dir: Path | str) -> tuple[dict, dict]:
    import joblib

    path = Path(model_dir)
    return joblib.load(path / HEAD_FILE), json.loads((path / CONFIG_FILE).read_text())


def predict(
    model_dir: Path | str,
    texts: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    rewrite: bool | None = None,
) -> tuple[list[dict], list[float]]:
    """Each text's ``{"summary": ...}`` (its kept units, a dialogue's turns rewritten in the
    third person unless `rewrite` is False; None: as the model was saved) and confidence
    (the score margin); `batch_size` and `max_length` are the fine-tunes' and not used."""
    if not texts:
        return [], []
    saved, config = load(model_dir)
    # Models saved before the rewrite existed have no key: they keep their extracts.
    join = rewrite_summary if (config.get("rewrite", False) if rewrite is None else rewrite) else join_units
    probabilities, units = _probabilities(saved, list(texts))
    answers, confidences = [], []
    for text, (spans, unit_texts), p in zip(texts, units, probabilities, strict=True):
        if not unit_texts:
            answers.append({"summary": ""})
            confidences.append(0.0)
            continue
        kept = _choose(p, unit_texts, config["rule"])
        answers.append({"summary": join(text, spans, kept)})
        confidences.append(_confidence(p, kept))
    # The margin as the share of validation summaries this sure that were right.
    return answers, measure.calibrated(confidences, config.get("calibration"))


def calibrate(val, val_units, probabilities, rule) -> dict | None:
    """Map the score margin to how often a summary that sure is right (ROUGE-L against its
    summary at or above the task's floor, the coverage sweep's "right") on validation."""
    from tasks.summarization.task import RIGHT_FLOOR

    margins, right = [], []
    for (text, summary), (spans, units), p in zip(val, val_units, probabilities, strict=True):
        if not units:
            continue
        kept = _choose(p, units, rule)
        margins.append(_confidence(p, kept))
        right.append(measure.rouge_l(summary, rewrite_summary(text, spans, kept)) >= RIGHT_FLOOR)
    return measure.calibration_map(margins, right)


def export_onnx(model_dir: Path | str, out_dir: Path | str, *, max_length: int) -> Path:
    raise ValueError("int8 (ONNX) serving is not offered for the extractive summarisation student.")


def predict_onnx(onnx_dir: Path | str, texts: list[str], *, batch_size: int = 64, max_length: int = 128):
    raise ValueError("int8 (ONNX) serving is not offered for the extractive summarisation student.")
