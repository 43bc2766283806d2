"""The offline extraction teacher: a dictionary of the values reviewers marked, no API key.

Every value a reviewed answer marks for a field becomes a pattern for that field, matched
case-insensitively on whole tokens ("4" is not found in "14" or "4pm"), any whitespace
standing for any other. A pattern's precision is ``marked / present`` over the reviewed
texts that hold it; a match is kept when its precision is at least ``keep``; where matches
overlap the longest wins, then the more precise; a one-value field keeps its most precise.

The answer's confidence takes the patterns as independent: the product of the kept spans'
precisions, of ``1 - precision`` for the matches dropped, and of the **coverage** (the share
of reviewed texts whose every value was also marked in another reviewed text: what it could
not know yet). Weak (it knows no value it has not seen) but honest about it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tasks.base import Answer, Category

KEEP = 0.5


# Words and single punctuation marks: a value matches whole tokens, so "4" is never found
# inside "14" or "4pm", while "$5" is found in "now$5".
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def value_key(value: str) -> str:
    """The form two mentions of a value share: its tokens in lower case, one space apart."""
    return " ".join(token for token, _, _ in _tokens(value))


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    field: str
    precision: float


class DictionaryTeacher:
    """Learned from ``memory``, ``[(text, {"spans": [...]})]`` of reviewed answers (see the module docstring)."""

    name = "dictionary"
    confidence_method = "dictionary"

    def __init__(
        self, categories: Sequence[Category], memory: Iterable[tuple[str, Answer]] = (), *, keep=KEEP
    ):
        self.categories = list(categories)
        self.keep = keep
        allows_many = {c.name: c.allows_many for c in self.categories}
        self._allows_many = allows_many
        memory = [(text, answer) for text, answer in memory if isinstance(answer, dict)]
        marked_in: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # (field, key) -> texts
        text_keys: list[set[tuple[str, str]]] = []
        for index, (text, answer) in enumerate(memory):
            keys = set()
            for span in answer.get("spans", []):
                if span.get("field") not in allows_many:
                    continue
                key = value_key(text[span["start"] : span["end"]])
                if key:
                    keys.add((span["field"], key))
                    marked_in[(span["field"], key)].add(index)
            text_keys.append(keys)
        self.fields_of: dict[str, list[str]] = defaultdict(list)
        for field, key in sorted(marked_in):
            self.fields_of[key].append(field)
        self.fields_of = dict(self.fields_of)
        # First token -> the token lengths of the values that start with it, longest first.
        lengths: defaultdict[str, set[int]] = defaultdict(set)
        for key in self.fields_of:
            parts = key.split(" ")
            lengths[parts[0]].add(len(parts))
        self._lengths = {first: sorted(n, reverse=True) for first, n in lengths.items()}
        present: defaultdict[str, set[int]] = defaultdict(set)
        for index, (text, _) in enumerate(memory):
            for _, _, key in self._found(text):
                present[key].add(index)
        self.precision: dict[tuple[str, str], float] = {}
        for (field, key), texts in marked_in.items():
            # A value marked where no whole tokens hold it (inside a word) still counts.
            self.precision[(field, key)] = len(texts) / len(present[key] | texts)
        covered = sum(all(len(marked_in[k]) >= 2 for k in keys) for keys in text_keys)
        self.coverage = covered / len(memory) if memory else 0.0
        self.examples = len(memory)

    def _found(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, key) of every known value in the text, overlapping ones included."""
        tokens = _tokens(text)
        words = [token for token, _, _ in tokens]
        found = []
        for i, first in enumerate(words):
            for length in self._lengths.get(first, ()):
                if i + length <= len(words):
                    key = " ".join(words[i : i + length])
                    if key in self.fields_of:
                        found.append((tokens[i][1], tokens[i + length - 1][2], key))
        return found

    def _matches(self, text: str) -> list[_Match]:
        return [
            _Match(start, end, field, self.precision[(field, key)])
            for start, end, key in self._found(text)
            for field in self.fields_of[key]
        ]

    def predict(self, texts: Sequence[str]) -> list[tuple[Answer, float]]:
        """One ``({"spans": [...]}, confidence)`` per text, in order."""
        return [self._predict(text) for text in texts]

    def _predict(self, text: str) -> tuple[Answer, float]:
        candidates = self._matches(text)
        # Longest, then most precise, then first: each accepted span blocks those it overlaps.
        candidates.sort(key=lambda m: (-(m.end - m.start), -m.precision, m.start, m.field))
        kept: list[_Match] = []
        unsure: list[_Match] = []
        taken: Counter[str] = Counter()
        for match in candidates:
            if match.precision < self.keep:
                unsure.append(match)
                continue
            overlaps = any(match.start < k.end and k.start < match.end for k in kept)
            if overlaps or (not self._allows_many[match.field] and taken[match.field]):
                continue  # another reading of a place (or a field's one value) already chosen
            kept.append(match)
            taken[match.field] += 1
        confidence = self.coverage
        for match in kept:
            confidence *= match.precision
        # A value left out for being rarely marked might have been one: unless a kept span
        # covers its place, that chance counts against the answer.
        for match in unsure:
            if not any(match.start < k.end and k.start < match.end for k in kept):
                confidence *= 1 - match.precision
        spans = sorted(
            ({"start": m.start, "end": m.end, "field": m.field} for m in kept),
            key=lambda s: (s["start"], s["end"], s["field"]),
        )
        return {"spans": spans}, max(0.0, min(1.0, confidence))
