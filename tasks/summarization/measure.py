"""Measuring summaries: ROUGE, the greedy oracle, unsupported content, length, agreement.

ROUGE is Google's ``rouge_score`` (ROUGE-1/2/L F-measure, Porter stemming, its own
tokenizer: lower case, runs of letters and digits). With several references a score is
the best over them, per measure (and ``*_first`` against the first, the way DialogSum's
leaderboard reports).

Unsupported content (``unsupported``) is a cheap hallucination screen: the numbers,
amounts of money, dates and names a summary states that its source does not hold. It is
deliberately literal; what it calls supported is:

- a number when the same digits occur in the source (commas dropped: "1,200" = "1200");
  "5" is NOT supported by "five";
- money when its amount occurs in the source as a number and its currency as a symbol or
  a word ("$5" is supported by "5 dollars", "5 bucks" is not);
- a date (a month or weekday name with an optional day and year, or 12/05/2024) when each
  of its words and numbers occurs in the source ("May 5th" by "the 5th of May");
- a name (a run of capitalised words) when each of its words occurs in the source, in any
  case. A capital that opens a sentence is not a name (a name that opens one is missed),
  nor are "I" and titles ("Mr", "Dr"); DialogSum's speaker tags (``#Person1#``) are skipped.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from tasks.summarization.units import clean_target, sentence_spans, word_count

MEASURES = ("rouge1", "rouge2", "rougeL")


class _Tokenizer:
    """``rouge_score``'s own tokenization (its ``tokenize.tokenize``, stemming words over three
    letters) with each word's stem remembered: stemming was most of the oracle's time."""

    def __init__(self):
        from nltk.stem import porter
        from rouge_score import tokenize

        self._module = tokenize
        self.stem = functools.lru_cache(maxsize=200_000)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        words = self._module.SPACES_RE.split(self._module.NON_ALPHANUM_RE.sub(" ", text.lower()))
        words = [self.stem(w) if len(w) > 3 else w for w in words]
        return [w for w in words if self._module.VALID_TOKEN_RE.match(w)]


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(MEASURES), tokenizer=_Tokenizer())


def tokens(text: str) -> list[str]:
    """``rouge_score``'s tokens of `text` (lower case, stemmed): what ROUGE counts."""
    return _scorer()._tokenizer.tokenize(text)


def rouge(references: Sequence[str], candidate: str) -> dict[str, float]:
    """ROUGE-1/2/L F of `candidate`: the best over `references`, and ``*_first`` against the first."""
    if not references:
        raise ValueError("rouge needs at least one reference")
    scores = [_scorer().score(reference, candidate) for reference in references]
    out = {m: max(s[m].fmeasure for s in scores) for m in MEASURES}
    out.update({f"{m}_first": scores[0][m].fmeasure for m in MEASURES})
    return out


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts (symmetric)."""
    return _scorer().score(a, b)["rougeL"].fmeasure


def mean_pairwise_rouge_l(samples: Sequence[str | None]) -> float | None:
    """Mean ROUGE-L F over every pair of the samples (a teacher's self-consistency); None under two."""
    kept = [s for s in samples if s is not None]
    pairs = list(itertools.combinations(kept, 2))
    if not pairs:
        return None
    return float(np.mean([rouge_l(a, b) for a, b in pairs]))


# --- the greedy oracle ----------------------------------------------------------------------


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(zip(*(words[i:] for i in range(n)), strict=False))


def _f(overlap: int, candidate: int, reference: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / candidate, overlap / reference
    return 2 * precision * recall / (precision + recall)


def oracle_units(
    text: str, units: Sequence[tuple[int, int]], reference: str, *, max_units: int | None = None
) -> list[int]:
    """The classic greedy oracle: starting from nothing, add the unit that most raises
    ROUGE-1 F + ROUGE-2 F against `reference`, until no unit raises it (or `max_units`).

    Indices in document order. N-grams are counted within units (a bigram across two
    units' boundary, which ``rouge_score`` would count in their joined text, is left out):
    each step then adds one unit's counts instead of recounting the text.
    """
    unit_tokens = [tokens(text[start:end]) for start, end in units]
    ref = tokens(reference)
    if not ref:
        return []
    ref1, ref2 = _ngrams(ref, 1), _ngrams(ref, 2)
    grams = [
        (_ngrams(words, 1), _ngrams(words, 2), len(words), max(len(words) - 1, 0)) for words in unit_tokens
    ]

    def score(c1: Counter, c2: Counter, n1: int, n2: int) -> float:
        return _f(sum((c1 & ref1).values()), n1, len(ref)) + _f(sum((c2 & ref2).values()), n2, len(ref) - 1)

    current = (Counter(), Counter(), 0, 0)
    chosen: list[int] = []
    best = 0.0
    while max_units is None or len(chosen) < max_units:
        options = []
        for i, (u1, u2, n1, n2) in enumerate(grams):
            if i not in chosen:
                merged = (current[0] + u1, current[1] + u2, current[2] + n1, current[3] + n2)
                options.append((score(*merged), -i, merged))
        if not options:
            break
        value, negative, merged = max(options, key=lambda o: (o[0], o[1]))
        if value <= best:
            break
        chosen.append(-negative)
        best, current = value, merged
    return sorted(chosen)


# --- unsupported content --------------------------------------------------------------------

# Capitalised only: "may" the verb is no date.
_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December"
    "|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
CURRENCIES = {"$": "dollar", "€": "euro", "£": "pound", "¥": "yen"}
_CURRENCY_WORDS = "dollars?|euros?|pounds?|yen|cents?|usd|eur|gbp|rmb|yuan"
_NUMBER = r"\d+(?:[.,:]\d+)*"
_PATTERNS = [
    ("money", re.compile(rf"[$€£¥]\s?{_NUMBER}|{_NUMBER}\s?(?:{_CURRENCY_WORDS})\b", re.I)),
    (
        "date",
        re.compile(
            rf"\b\d{{1,4}}[/-]\d{{1,2}}[/-]\d{{1,4}}\b"
            rf"|\b(?:{_MONTHS})\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?)?(?:,?\s+\d{{4}})?\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\b(?:,?\s+\d{{4}})?"
            rf"|\b(?:{_DAYS})\b"
        ),
    ),
    ("number", re.compile(rf"(?<![\w.]){_NUMBER}(?:st|nd|rd|th)?\b")),
]
_SPEAKER = re.compile(r"#[^#\s]{1,40}#")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*")
# "I" and titles: "Mr. Jones" is supported by "Jones".
_NOT_NAMES = {"I", "Mr", "Mrs", "Ms", "Dr", "Prof", "Miss", "Sir", "Madam"}
_ALNUM = re.compile(r"[a-z]+|\d+")


def _words(text: str) -> set[str]:
    return set(_ALNUM.findall(text.lower().replace(",", "")))


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in re.findall(_NUMBER, text)}


def _supported(kind: str, item: str, source: str) -> bool:
    if kind == "number":
        return re.sub(r"(st|nd|rd|th)$", "", item).replace(",", "") in _numbers(source)
    if kind == "money":
        amount = re.search(_NUMBER, item).group().replace(",", "")
        symbol = item.strip()[0]
        unit = CURRENCIES.get(symbol) or re.sub(r"s$", "", re.sub(r"[\d.,:\s]", "", item).lower())
        symbols = [s for s, word in CURRENCIES.items() if word == unit]
        has_currency = (
            unit in _words(source) or f"{unit}s" in _words(source) or any(s in source for s in symbols)
        )
        return amount in _numbers(source) and has_currency
    parts = {re.sub(r"(\d+)(st|nd|rd|th)$", r"\1", w) for w in _words(item) - {"of"}}
    known = _words(source)
    known |= {re.sub(r"(\d+)(st|nd|rd|th)$", r"\1", w) for w in known}
    return parts <= known


def _sentence_starts(summary: str) -> set[int]:
    """Where each sentence's first word begins (after quotes and brackets)."""
    starts = set()
    for start, end in sentence_spans(summary):
        first = re.search(r"\w", summary[start:end])
        if first:
            starts.add(start + first.start())
    return starts


def unsupported(summary: str, source: str) -> list[dict]:
    """The numbers, money, dates and names of `summary` that `source` does not support
    (module docstring): ``[{"start", "end", "kind", "text"}]`` in order of position."""
    taken = [(m.start(), m.end()) for m in _SPEAKER.finditer(summary)]
    found: list[tuple[int, int, str]] = []

    def free(start: int, end: int) -> bool:
        return not any(start < e and s < end for s, e in taken)

    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(summary):
            if free(match.start(), match.end()):
                taken.append((match.start(), match.end()))
                found.append((match.start(), match.end(), kind))
    starts = _sentence_starts(summary)
    for match in _CAPITALISED.finditer(summary):
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", match.group())]
        words = [(match.start() + s, match.start() + e) for s, e in words]
        words = [
            (s, e) for s, e in words if s not in starts and summary[s:e] not in _NOT_NAMES and free(s, e)
        ]
        if words:
            # Consecutive capitalised words, less the sentence opener: one name.
            start, end = words[0][0], words[-1][1]
            taken.append((start, end))
            found.append((start, end, "name"))
    items = [
        {"start": s, "end": e, "kind": kind, "text": summary[s:e]}
        for s, e, kind in sorted(found)
        if not _supported(kind, summary[s:e], source)
    ]
    return items


# --- length, metrics, agreement ---------------------------------------------------------------


def length(summary: str, unit: str) -> int:
    """The summary's length in `unit`: words (as ``units.word_count``) or sentences."""
    if unit == "words":
        return word_count(summary)
    if unit == "sentences":
        return len(sentence_spans(summary))
    raise ValueError(f"unknown length unit {unit!r}")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def metrics(
    references: Sequence[Sequence[str]],
    predicted: Sequence[str | None],
    *,
    texts: Sequence[str],
    target: Mapping | None = None,
    embeddings: bool = False,
) -> dict:
    """The summarisation metric set over a gold set (`references`: each item's reference summaries).

    ``score`` is the mean ROUGE-L F (best over an item's references); an item with no
    prediction counts 0 in every ROUGE mean and the embedding similarity. Unsupported
    content and length are over the predicted items. ``embeddings=True`` adds the mean
    cosine similarity of the bundled MiniLM's sentence embeddings (best over the
    references); it loads torch, so it is off unless asked.
    """
    if not (len(references) == len(predicted) == len(texts)):
        raise ValueError("references, predicted and texts must be as long as each other")
    target = clean_target(target)
    n = len(predicted)
    scores = {key: [] for m in MEASURES for key in (m, f"{m}_first")}
    flagged, lengths = [], []
    for refs, summary, text in zip(references, predicted, texts, strict=True):
        if summary is None:
            for values in scores.values():
                values.append(0.0)
            continue
        for key, value in rouge(list(refs), summary).items():
            scores[key].append(value)
        flagged.append(len(unsupported(summary, text)))
        lengths.append(length(summary, target["unit"]))
    out = {
        "examples": n,
        "predicted": len(flagged),
        "missing": n - len(flagged),
        "score": _mean(scores["rougeL"]),
        **{key: _mean(values) for key, values in scores.items()},
        "unsupported_rate": _mean([float(c > 0) for c in flagged]),
        "unsupported_per_summary": _mean([float(c) for c in flagged]),
        "target": target,
        "length_mean": _mean([float(v) for v in lengths]),
        "length_within_50": _mean(
            [float(abs(v - target["length"]) <= 0.5 * target["length"]) for v in lengths]
        ),
        "embedding_similarity": None,
    }
    if embeddings and n:
        out["embedding_similarity"] = embedding_similarity(references, predicted)
    return out


def embedding_similarity(references: Sequence[Sequence[str]], predicted: Sequence[str | None]) -> float:
    """Mean over items of the best cosine similarity between the prediction and a reference (0 if missing)."""
    from distillapp.ml import embed_texts

    unique = list(
        dict.fromkeys([r for refs in references for r in refs] + [p for p in predicted if p is not None])
    )
    vectors = dict(zip(unique, embed_texts(unique), strict=True)) if unique else {}
    values = []
    for refs, summary in zip(references, predicted, strict=True):
        if summary is None or not refs:
            values.append(0.0)
            continue
        values.append(max(float(vectors[summary] @ vectors[r]) for r in refs))
    return float(np.mean(values))


def agreement(pairs: Sequence[tuple[Mapping | None, Mapping | None]], *, texts: Sequence[str] = ()) -> dict:
    """Two blind reviewers' answers (``{"summary", "rating"?}``; None: rejected).

    ``rougeL``: the mean ROUGE-L F between their summaries where both wrote one; ``alpha``:
    Krippendorff's ordinal alpha over the ratings where both gave one (None when fewer
    than two such pairs or when every rating is the same: no variation to agree on).
    """
    import krippendorff

    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    rouges = [rouge_l(a["summary"], b["summary"]) for a, b in both if a.get("summary") and b.get("summary")]
    rated = [(a["rating"], b["rating"]) for a, b in both if a.get("rating") and b.get("rating")]
    alpha = None
    if len(rated) >= 2 and len({r for pair in rated for r in pair}) > 1:
        alpha = float(
            krippendorff.alpha(
                reliability_data=np.array(rated, dtype=float).T,
                level_of_measurement="ordinal",
                value_domain=[1, 2, 3, 4, 5],
            )
        )
    ratings = [float(r["rating"]) for pair in both for r in pair if r.get("rating")]
    return {
        "pairs": len(pairs),
        "summaries": len(rouges),
        "rougeL": _mean(rouges),
        "rated": len(rated),
        "alpha": alpha,
        "mean_rating": _mean(ratings),
    }


# Calibration needs this many validation summaries, right and wrong ones among them.
CALIBRATION_MIN = 20


def calibration_map(confidences: Sequence[float], right: Sequence[bool]) -> dict | None:
    """An increasing map from a student's raw confidence to how often a summary that sure was
    right on validation (isotonic regression, clipped); None with too few or one-sided examples."""
    from sklearn.isotonic import IsotonicRegression

    if len(confidences) < CALIBRATION_MIN or len(set(right)) < 2:
        return None
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    fit.fit(list(confidences), [float(r) for r in right])
    return {"x": [float(x) for x in fit.X_thresholds_], "y": [float(y) for y in fit.y_thresholds_]}


def calibrated(confidences: Sequence[float], mapping: Mapping | None) -> list[float]:
    """Raw confidences through a ``calibration_map`` (unchanged without one)."""
    if not mapping:
        return [float(c) for c in confidences]
    return [float(c) for c in np.interp(list(confidences), mapping["x"], mapping["y"])]
