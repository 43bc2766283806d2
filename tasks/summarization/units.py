"""The units an extractive summary is made of, and how many of them a target length takes.

A text that is a dialogue (at least two lines that open with a speaker: ``#Person1#: ...``,
``Agent: ...``) is cut into turns: a turn runs from its speaker line to the next one, so
lines without a speaker belong to the turn above. Any other text is cut into sentences by
a regex (no NLTK data at run time): a sentence ends at ``.``, ``!`` or ``?`` (and any
closing quotes or brackets) before whitespace, unless the word before the full stop is a
known abbreviation ("Mr.", "e.g.") or a single capital (an initial, "J. Smith"); a decimal
("3.5") never ends one since no whitespace follows its point. A blank line always ends a
sentence (headings, list items).

Offsets are characters of the text, (start, end) with the unit's outer whitespace left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

DEFAULT_TARGET = {"unit": "sentences", "length": 2}
UNITS = ("words", "sentences")

# A speaker tag: "#Person1#" (DialogSum), or one to three words starting with a capital
# ("Agent", "Customer", "Dr Smith"), then a colon and text on the same line.
_TURN = re.compile(
    r"^[ \t]*(?:#[^#\n]{1,40}#|[A-Z][\w.'-]*(?:[ \t][A-Z0-9][\w.'-]*){0,2})[ \t]*:[ \t]*\S", re.M
)
# Lowercase, without the full stop: "Mr." -> "mr", "e.g." -> "e.g".
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr mt vs etc e.g i.e cf al inc ltd co corp no nos vol fig approx dept est "
    "jan feb mar apr jun jul aug sep sept oct nov dec a.m p.m u.s u.k".split()
)
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"\w+(?:['’-]\w+)*")


def is_dialogue(text: str) -> bool:
    return len(_TURN.findall(text)) >= 2


def split_units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each unit: dialogue turns when the text is a dialogue, else sentences."""
    if is_dialogue(text):
        return turn_spans(text)
    return sentence_spans(text)


def turn_spans(text: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in _TURN.finditer(text)]
    if not starts:
        return _stripped(text, [(0, len(text))])
    bounds = [(0, starts[0])] if text[: starts[0]].strip() else []
    bounds += list(zip(starts, starts[1:] + [len(text)], strict=True))
    return _stripped(text, bounds)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    block_start = 0
    for block_end in [m.start() for m in _BLANK_LINE.finditer(text)] + [len(text)]:
        start = block_start
        for match in _END.finditer(text, block_start, block_end):
            if match.group().startswith(".") and _is_abbreviation(text[start : match.start() + 1]):
                continue
            spans.append((start, match.end()))
            start = match.end()
        spans.append((start, block_end))
        block_start = block_end
    return _stripped(text, spans)


def _is_abbreviation(sentence: str) -> bool:
    """Whether the full stop that ends `sentence` closes an abbreviation or an initial."""
    found = _WORD_BEFORE.search(sentence)
    if found is None:
        return False
    word = found.group(1)
    return word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _stripped(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for start, end in spans:
        piece = text[start:end]
        if piece.strip():
            left = len(piece) - len(piece.lstrip())
            out.append((start + left, start + len(piece.rstrip())))
    return out


def unit_texts(text: str, spans: Sequence[tuple[int, int]] | None = None) -> list[str]:
    return [text[start:end] for start, end in (split_units(text) if spans is None else spans)]


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def clean_target(target: Mapping | None) -> dict:
    """The target with its defaults: ``{"unit": "sentences" | "words", "length": int >= 1}``."""
    target = {**DEFAULT_TARGET, **(target or {})}
    if target["unit"] not in UNITS:
        raise ValueError(f"a target's unit is one of {', '.join(UNITS)}, not {target['unit']!r}")
    length = int(target["length"])
    if length < 1:
        raise ValueError("a target's length is at least 1")
    return {"unit": target["unit"], "length": length}


def fit_to_target(units: Sequence[str], ranked: Sequence[int], target: Mapping | None) -> list[int]:
    """The units to keep, in document order: the best `ranked` (indices, best first) that the target allows.

    Sentences: the first ``length`` of `ranked` (an extracted turn counts as one sentence).
    Words: down the ranking, each unit that still fits within ``length`` words in all; a
    unit that does not fit is passed over for a shorter one further down, and when not even
    the best fits alone it is taken anyway (a summary is never empty).
    """
    target = clean_target(target)
    if target["unit"] == "sentences":
        return sorted(ranked[: target["length"]])
    kept, words = [], 0
    for index in ranked:
        size = word_count(units[index])
        if words + size <= target["length"]:
            kept.append(index)
            words += size
    if not kept and ranked:
        kept = [ranked[0]]
    return sorted(kept)


def join_units(text: str, spans: Sequence[tuple[int, int]], indices: Sequence[int]) -> str:
    """The extractive summary of the chosen units: one turn per line, sentences one space apart."""
    separator = "\n" if is_dialogue(text) else " "
    return separator.join(text[spans[i][0] : spans[i][1]] for i in sorted(indices))
