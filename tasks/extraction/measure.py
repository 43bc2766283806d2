"""Measuring span answers: agreement of two annotators, entity-level metrics, the field confusion table.

Entity-level precision/recall/F1 come from nervaluate (the SemEval-2013 scheme):
"strict" is an exact start, end and field; "partial" is nervaluate's ``ent_type``
(the spans overlap and the field is the same).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from tasks.extraction.spans import span_key, whitespace_tokens
from tasks.stats import calibration, wilson_interval

REJECT = "(reject)"
NONE = "(none)"
OUTSIDE = "O"


def _keys(answer: Mapping | None) -> set[tuple[int, int, str]]:
    return {span_key(s) for s in (answer or {}).get("spans", [])}


def _f1(common: int, first: int, second: int) -> float:
    # Span-set F1 between two sides is 2|A∩B| / (|A| + |B|); two empty sides agree fully.
    return 1.0 if first + second == 0 else 2 * common / (first + second)


# --- agreement --------------------------------------------------------------------------


def token_labels(text: str, answer: Mapping | None) -> list[str]:
    """One label per whitespace token: its field, "O" outside, the fields joined by "+" where spans overlap.

    A rejected text (None) labels every token REJECT, so a reject is its own category.
    """
    tokens = whitespace_tokens(text)
    if answer is None:
        return [REJECT] * len(tokens)
    labels = []
    for start, end in tokens:
        fields = sorted({s["field"] for s in answer["spans"] if s["start"] < end and start < s["end"]})
        labels.append("+".join(fields) or OUTSIDE)
    return labels


def agreement(pairs: Sequence[tuple[Mapping | None, Mapping | None]], *, texts: Sequence[str]) -> dict:
    """Span-level F1 of two blind annotators (exact start, end, field), overall and per field,
    the share of texts with identical answers (``observed``), and token-level Cohen's kappa.

    A reject (None) is its own category, as in classification: it counts as one unit of
    field REJECT in the span F1, so two rejects agree and a reject against spans does not.
    """
    from sklearn.metrics import cohen_kappa_score

    if len(pairs) != len(texts):
        raise ValueError(f"{len(pairs)} pairs but {len(texts)} texts")
    if not pairs:
        return {"pairs": 0, "f1": None, "per_field": {}, "observed": None, "kappa": None, "tokens": 0}
    common: Counter[str] = Counter()
    first_count: Counter[str] = Counter()
    second_count: Counter[str] = Counter()
    identical = 0
    first_tokens: list[str] = []
    second_tokens: list[str] = []
    for (a, b), text in zip(pairs, texts, strict=True):
        units_a = {(-1, -1, REJECT)} if a is None else _keys(a)
        units_b = {(-1, -1, REJECT)} if b is None else _keys(b)
        identical += units_a == units_b
        first_count.update(f for _, _, f in units_a)
        second_count.update(f for _, _, f in units_b)
        common.update(f for _, _, f in units_a & units_b)
        first_tokens += token_labels(text, a)
        second_tokens += token_labels(text, b)
    fields = sorted(set(first_count) | set(second_count))
    per_field = {f: _f1(common[f], first_count[f], second_count[f]) for f in fields}
    if len(set(first_tokens) | set(second_tokens)) > 1:
        kappa = float(cohen_kappa_score(first_tokens, second_tokens))
    else:
        kappa = 1.0 if first_tokens else None
    return {
        "pairs": len(pairs),
        "f1": _f1(sum(common.values()), sum(first_count.values()), sum(second_count.values())),
        "per_field": per_field,
        "observed": identical / len(pairs),
        "kappa": kappa,
        "tokens": len(first_tokens),
    }


# --- metrics ----------------------------------------------------------------------------


def _entities(answer: Mapping | None) -> list[dict]:
    # nervaluate's spans have inclusive ends.
    return [
        {"label": s["field"], "start": s["start"], "end": s["end"] - 1}
        for s in sorted((answer or {}).get("spans", []), key=span_key)
    ]


def _exact_first(gold: list[dict], predicted: list[dict]) -> list[dict]:
    # nervaluate matches greedily in prediction order, and a prediction that only overlaps
    # a gold span claims it: an exact prediction coming after it would then be counted
    # spurious. Offering the exact matches first keeps strict "correct" = |gold ∩ predicted|.
    exact = {(e["label"], e["start"], e["end"]) for e in gold}
    return sorted(predicted, key=lambda e: (e["label"], e["start"], e["end"]) not in exact)


def _prf(result) -> dict:
    return {
        "precision": float(result.precision),
        "recall": float(result.recall),
        "f1": float(result.f1),
        "correct": int(result.correct),
        "predicted": int(result.actual),
        "gold": int(result.possible),
    }


def entity_scores(
    gold: Sequence[Mapping], predicted: Sequence[Mapping | None], fields: Sequence[str] = ()
) -> dict:
    """Strict and partial P/R/F1, micro, macro and per field (nervaluate).

    Macro averages the fields that occur in gold or in a prediction. A missing
    prediction (None) predicts no span.
    """
    from nervaluate import Evaluator

    true = [_entities(g) for g in gold]
    pred = [_exact_first(t, _entities(p)) for t, p in zip(true, predicted, strict=True)]
    seen = sorted({e["label"] for doc in true + pred for e in doc})
    tags = list(fields) + [f for f in seen if f not in fields]
    per_tag: dict = {}
    overall: dict = {}
    if any(true) or any(pred):
        results = Evaluator(true, pred, tags=tags, loader="dict").evaluate()
        overall, per_tag = results["overall"], results["entities"]
    scores: dict = {}
    for name, strategy in (("strict", "strict"), ("partial", "ent_type")):
        micro = _prf(overall[strategy]) if strategy in overall else _empty()
        by_field = {tag: _prf(per_tag[tag][strategy]) for tag in per_tag}
        f1s = [by_field[t]["f1"] for t in tags if t in by_field]
        scores[name] = {
            "micro": micro,
            "macro": {
                "precision": _mean([by_field[t]["precision"] for t in tags if t in by_field]),
                "recall": _mean([by_field[t]["recall"] for t in tags if t in by_field]),
                "f1": _mean(f1s),
            },
            "per_field": by_field,
        }
    return scores


def _empty() -> dict:
    return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "correct": 0, "predicted": 0, "gold": 0}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def field_confusion(
    gold: Sequence[Mapping], predicted: Sequence[Mapping | None], fields: Sequence[str] = ()
) -> dict:
    """Counts of gold field × predicted field over matched spans, with NONE for missed and spurious.

    Spans are matched one to one per text: exact boundaries first, then the largest
    overlap, preferring the same field. Row NONE counts spurious predictions (no gold
    span), column NONE missed gold spans (no predicted span). Shaped like
    classification's confusion: ``{"labels": [...], "matrix": [[...]]}``, rows gold.
    """
    counts: Counter[tuple[str, str]] = Counter()
    boundary_errors = 0
    for g, p in zip(gold, predicted, strict=True):
        golds, preds = sorted(_keys(g)), sorted(_keys(p))
        free = set(range(len(preds)))
        unmatched = []
        for gs, ge, gf in golds:
            exact = [i for i in free if preds[i][:2] == (gs, ge)]
            if exact:
                best = min(exact, key=lambda i: preds[i][2] != gf)
            else:
                overlapping = [i for i in free if preds[i][0] < ge and gs < preds[i][1]]
                if not overlapping:
                    unmatched.append(gf)
                    continue
                best = max(
                    overlapping,
                    key=lambda i: (preds[i][2] == gf, min(ge, preds[i][1]) - max(gs, preds[i][0])),
                )
                boundary_errors += preds[best][2] == gf
            free.discard(best)
            counts[(gf, preds[best][2])] += 1
        counts.update((gf, NONE) for gf in unmatched)
        counts.update((NONE, preds[i][2]) for i in free)
    seen = sorted({f for pair in counts for f in pair if f != NONE})
    labels = list(fields) + [f for f in seen if f not in fields] + [NONE]
    matrix = [[counts[(row, column)] for column in labels] for row in labels]
    errors = Counter({pair: n for pair, n in counts.items() if pair[0] != pair[1]})
    return {
        "labels": labels,
        "matrix": matrix,
        "missed": sum(n for (g, p), n in counts.items() if p == NONE),
        "spurious": sum(n for (g, p), n in counts.items() if g == NONE),
        "wrong_field": sum(n for (g, p), n in counts.items() if NONE not in (g, p) and g != p),
        "boundary_errors": boundary_errors,
        "top_confusions": [{"true": g, "predicted": p, "count": n} for (g, p), n in errors.most_common(25)],
    }


def extraction_metrics(
    gold: Sequence[Mapping | None],
    predicted: Sequence[Mapping | None],
    *,
    texts: Sequence[str],
    fields: Sequence[str] = (),
    confidences: Sequence[float | None] | None = None,
    target_accuracy: float = 0.95,
) -> dict:
    """The metric set on a gold set; ``score`` is the strict entity micro-F1.

    A gold item that is None (rejected: no answer fits) is left out, as classification
    leaves out a reject; a missing prediction (None) counts as predicting no span.
    With a confidence per text, calibration and the coverage sweep are those of
    "the text is wholly right" (``exact_match``) against that confidence.
    """
    confidences = list(confidences) if confidences is not None else [None] * len(gold)
    if not len(gold) == len(predicted) == len(texts) == len(confidences):
        raise ValueError(
            f"{len(gold)} gold, {len(predicted)} predicted, {len(texts)} texts, {len(confidences)} confidences"
        )
    kept = [(g, p, c) for g, p, c in zip(gold, predicted, confidences, strict=True) if g is not None]
    if not kept:
        return {"examples": 0, "score": None}
    gold_kept = [g for g, _, _ in kept]
    pred_kept = [p for _, p, _ in kept]
    scores = entity_scores(gold_kept, pred_kept, fields)
    per_field = []
    for name in dict.fromkeys([*fields, *scores["strict"]["per_field"]]):
        strict = scores["strict"]["per_field"].get(name)
        partial = scores["partial"]["per_field"].get(name)
        per_field.append(
            {
                "field": name,
                "support": strict["gold"] if strict else 0,
                "predicted": strict["predicted"] if strict else 0,
                "strict": strict,
                "partial": partial,
            }
        )
    right = sum(_keys(g) == _keys(p) for g, p, _ in kept if p is not None)
    metrics = {
        "examples": len(kept),
        "score": scores["strict"]["micro"]["f1"],
        "strict": {"micro": scores["strict"]["micro"], "macro": scores["strict"]["macro"]},
        "partial": {"micro": scores["partial"]["micro"], "macro": scores["partial"]["macro"]},
        "per_field": per_field,
        "exact_match": right / len(kept),
        "exact_match_interval": wilson_interval(right, len(kept)),
        "confusion": field_confusion(gold_kept, pred_kept, fields),
        "missing_predictions": sum(p is None for p in pred_kept),
    }
    # A span set compares as a frozenset of its spans: equal exactly when the text is wholly right.
    metrics.update(
        calibration(
            [frozenset(_keys(g)) for g in gold_kept],
            [None if p is None else frozenset(_keys(p)) for p in pred_kept],
            [c for _, _, c in kept],
            bins=10,
            target_accuracy=target_accuracy,
        )
    )
    return metrics


WORST_EXAMPLES = 15


def worst_texts(rows: list[dict], texts: dict[int, str], *, marked, limit: int = WORST_EXAMPLES) -> dict:
    """The gold items with the most wrong spans (then the most confident) of an evaluation's
    rows, each side cut for highlighting by ``marked(text, answer)``."""
    keys = _keys
    worst = []
    for row in rows:
        errors = len(keys(row["gold"]) ^ keys(row["predicted"]))
        if errors:
            worst.append((errors, row.get("confidence") or 0.0, row))
    worst.sort(key=lambda item: (-item[0], -item[1], item[2]["example"]))
    examples = []
    for errors, _, row in worst[:limit]:
        text = texts.get(row["example"], "")
        examples.append(
            {
                "id": row["example"],
                "errors": errors,
                "missed": len(keys(row["gold"]) - keys(row["predicted"])),
                "spurious": len(keys(row["predicted"]) - keys(row["gold"])),
                "confidence": row.get("confidence"),
                "gold": marked(text, row["gold"]),
                "predicted": marked(text, row["predicted"]) if row["predicted"] is not None else None,
            }
        )
    return {"worst": examples, "wrong_texts": len(worst)}
