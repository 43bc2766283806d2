"""The public datasets in ../shared/data (see its README), read in place, never copied.

A fresh clone has no ../shared beside it: tests that need a dataset skip there with
the reason, and run where the folder exists (CI). DISTILL_SHARED_DATA points elsewhere.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def dataset(name: str) -> Path:
    """The dataset's folder, or skip the test when it is not on this machine."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"needs the shared dataset {name} at {path} (not in a fresh clone; CI has it)")
    return path


def first_per_label(path: Path, labels: list[str], count: int) -> list[tuple[str, str]]:
    """The first ``count`` (text, category) rows of each label in a Banking77-style CSV, label by label."""
    by_label: dict[str, list[tuple[str, str]]] = {label: [] for label in labels}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            found = by_label.get(row["category"])
            if found is not None and len(found) < count:
                found.append((row["text"], row["category"]))
    return [pair for label in labels for pair in by_label[label]]
