"""Slices of the shared span datasets as (text, spans), for the extraction tests."""

from __future__ import annotations

import json
from functools import cache
from itertools import islice

from tasks.extraction.spans import normalise_spans
from tests.shared_data import dataset


@cache
def _restaurant8k(split: str) -> list[dict]:
    with (dataset("restaurant8k") / f"{split}.json").open(encoding="utf-8") as f:
        return json.load(f)


def restaurant8k(split: str = "test", count: int | None = None) -> list[tuple[str, list[dict]]]:
    """(text, normalised spans); ``valueSpan`` leaves out ``startIndex`` when it is 0."""
    rows = []
    for row in islice(_restaurant8k(split), count):
        text = row["userInput"]["text"]
        spans = [
            {
                "start": label["valueSpan"].get("startIndex", 0),
                "end": label["valueSpan"]["endIndex"],
                "field": label["slot"],
            }
            for label in row.get("labels", [])
        ]
        rows.append((text, normalise_spans(text, spans)))
    return rows


def wnut17_lines(split: str = "train", sentences: int | None = None) -> list[str]:
    """The file's lines, up to the blank line that ends the given number of sentences."""
    lines, seen = [], 0
    with (dataset("wnut17") / f"{split}.conll").open(encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if not line.strip():
                seen += 1
                if sentences is not None and seen == sentences:
                    break
    return lines
