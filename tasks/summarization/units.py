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


# Speaker-aware rewriting (the student's cheapest abstraction). DialogSum's references are
# third person and name the speakers by their tags ("#Person1# wants ..."), while its turns
# are first and second person ("#Person1#: I want ..."); the rewrite moves a kept turn
# towards the references' form. Contractions are matched with DialogSum's spaced apostrophes
# ("I ' m") too. In a two-speaker dialogue "we/us/our/let's" become both tags (it is wrong
# where "we" is the speaker's side, e.g. a shop, but measured it helps: bench/README.md).
_TAG = re.compile(r"^[ \t]*(#[^#\n]{1,40}#|[A-Z][\w.'-]*(?:[ \t][A-Z0-9][\w.'-]*){0,2})[ \t]*:[ \t]*")
_APOSTROPHE = r"\s*['’]\s*"
_FILLER = re.compile(
    r"(?:(?<=^)|(?<=[.!?]\s))(?:(?:well|oh|yes|yeah|ok|okay|o\.k\.|sure|uh|um|ah|hmm|so|right|alright|"
    r"hi|hello|hey|no|now)\b[,.!]?\s+)+",
    re.I,
)
# Hedges and fillers anywhere in a turn: references never keep them.
_HEDGE = re.compile(
    r"\b(?:just|really|very|actually|please|um|uh|oh|of course|you know|anyway|quite)\b,?[ \t]*", re.I
)


# Verbs a speaker says of themself that read wrong after a name ("Customer think"): the third
# person singular ("Customer thinks"). Only these: a word after "I" may be an adverb ("I also").
_VERBS = frozenset(
    "want need think know like see feel hope get take make go come call pay buy live work love guess "
    "mean understand remember forget agree prefer believe wonder say tell ask try plan expect hear own "
    "use order book change cancel wish suppose promise apologize appreciate bring send leave stay study "
    "play teach read write run drive meet find keep give look worry enjoy usually".split()
)
_IRREGULAR = {
    "am": "is",
    "are": "is",
    "have": "has",
    "do": "does",
    "don't": "doesn't",
    "haven't": "hasn't",
    "were": "was",
    "weren't": "wasn't",
}


def _third_person(verb: str) -> str:
    lower = verb.lower()
    if lower in _IRREGULAR:
        return _IRREGULAR[lower]
    if lower not in _VERBS or lower == "usually":
        return verb
    if lower.endswith(("s", "sh", "ch", "x", "o")):
        return verb + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _subject_rule(pronoun: str, name: str, flags: int) -> tuple[re.Pattern, object]:
    """ "I think" -> "Customer thinks": the pronoun as a subject before a verb it agrees with."""
    pattern = re.compile(rf"\b{pronoun}\s+(don't|haven't|weren't|[a-z]+)\b", flags)
    return pattern, lambda m: f"{name} {_third_person(m.group(1))}"


def _person_rules(own: str, other: str | None) -> list[tuple[re.Pattern, str]]:
    rules = [
        (rf"\bI{_APOSTROPHE}m\b", f"{own} is"),
        (rf"\bI{_APOSTROPHE}ve\b", f"{own} has"),
        (rf"\bI{_APOSTROPHE}ll\b", f"{own} will"),
        (rf"\bI{_APOSTROPHE}d\b", f"{own} would"),
        (r"\bI am\b", f"{own} is"),
        (r"\bI\b", own),
        (r"\b(?:me|myself)\b", own),
        (r"\b(?:my|mine)\b", f"{own}'s"),
    ]
    if other:
        rules += [
            (rf"\byou{_APOSTROPHE}re\b", f"{other} is"),
            (rf"\byou{_APOSTROPHE}ve\b", f"{other} has"),
            (rf"\byou{_APOSTROPHE}ll\b", f"{other} will"),
            (rf"\byou{_APOSTROPHE}d\b", f"{other} would"),
            (r"\byou are\b", f"{other} is"),
            (r"\b(?:you|yourself)\b", other),
            (r"\b(?:your|yours)\b", f"{other}'s"),
            (rf"\bwe{_APOSTROPHE}re\b", f"{own} and {other} are"),
            (rf"\blet{_APOSTROPHE}s\b", f"{own} and {other} will"),
            (r"\b(?:we|us)\b", f"{own} and {other}"),
            (r"\bour\b", f"{own} and {other}'s"),
        ]
    # Case-insensitive except "I": the pronoun is always a capital, the letter "i" is not one.
    compiled = [(re.compile(p, 0 if p.startswith(r"\bI") else re.I), r) for p, r in rules]
    # The subject forms first, so "I think" agrees before the bare "I" rule renames it.
    subjects = [_subject_rule("I", own, 0)] + ([_subject_rule("you", other, re.I)] if other else [])
    return compiled[:4] + subjects + compiled[4:]


def speakers(text: str) -> list[str]:
    """The dialogue's speaker tags in order of first turn (``#Person1#``, ``Agent``, ...)."""
    found: list[str] = []
    for start, end in turn_spans(text):
        match = _TAG.match(text[start:end])
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def rewrite_turn(turn: str, tags: Sequence[str], *, fillers: bool = True) -> str:
    """A dialogue turn in the third person: its speaker tag for I/me/my; where the dialogue
    has exactly two speakers, the other's tag for you/your and both tags for we/us/our/let's;
    with (`fillers`) the "Well, / Oh, / Yes, ..." that open its sentences and hedges ("just",
    "really", "please") left out. A rewrite that opens with the speaker's tag stands alone
    ("#Person1# want #Person1#'s car back"); any other keeps "tag: " before it. A turn
    without a speaker tag is returned as it is."""
    match = _TAG.match(turn)
    if match is None:
        return turn
    own = match.group(1)
    others = [t for t in tags if t != own]
    body = turn[match.end() :]
    if fillers:
        # A sentence that lost its opener starts with a capital again ("\0" marks where).
        trimmed = _HEDGE.sub("", _FILLER.sub("\0", body))
        trimmed = re.sub("\0+(\\w?)", lambda m: m.group(1).upper(), trimmed)
        body = trimmed[:1].upper() + trimmed[1:] if trimmed.strip(" ,.!?") else body
    for pattern, replacement in _person_rules(own, others[0] if len(others) == 1 else None):
        body = pattern.sub(replacement, body)
    # "#Person1# wants ..." reads as a summary; a turn that does not open with its speaker
    # keeps the tag and colon as attribution ("#Person2#: #Person1# can have it"): ROUGE
    # counts no punctuation, so the two score the same.
    return body if body.startswith(own) else f"{own}: {body}"


def rewrite_summary(text: str, spans: Sequence[tuple[int, int]], indices: Sequence[int], **options) -> str:
    """``join_units`` with each kept turn rewritten (``rewrite_turn``) when `text` is a
    dialogue; the units of any other text are joined as they are."""
    if not is_dialogue(text):
        return join_units(text, spans, indices)
    tags = speakers(text)
    return "\n".join(rewrite_turn(text[spans[i][0] : spans[i][1]], tags, **options) for i in sorted(indices))
