"""The confusion heat-map of a classification evaluation: the cells, their shades and names."""

from __future__ import annotations

# Column names longer than this are shortened in a crowded confusion matrix, where they
# stand on end (the column's title keeps the full name); row names wrap instead.
HEAT_NAME_CHARS = 22


def _heat(value: int, peak: int) -> str:
    return f"{0.08 + 0.85 * value / peak:.2f}" if value and peak else "0"


def heat_size(labels: int) -> str:
    """How roomy the confusion matrix can be: big wrapped names for a few labels, compact for many."""
    return "few" if labels <= 8 else "some" if labels <= 20 else "many"


def _short(name: str, size: str) -> str:
    if size == "few" or len(name) <= HEAT_NAME_CHARS:
        return name
    return name[: HEAT_NAME_CHARS - 1].rstrip() + "…"


def heatmap(confusion: dict) -> dict:
    """``heat_labels``, ``heat_rows`` and ``heat_size`` for the evaluation template; rows sorted by
    how many of the row's examples are wrong, worst first."""
    names, matrix = confusion.get("labels", []), confusion.get("matrix", [])
    size = heat_size(len(names))
    order = sorted(range(len(names)), key=lambda i: -(sum(matrix[i]) - matrix[i][i]) if matrix else 0)
    off_peak = max([v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j] + [1])
    diag_peak = max([matrix[i][i] for i in range(len(matrix))] + [1])
    rows = [
        {
            "label": names[i],
            "total": sum(matrix[i]),
            "cells": [
                {
                    "value": matrix[i][j],
                    "predicted": names[j],
                    "alpha": _heat(matrix[i][j], diag_peak if i == j else off_peak),
                    "is_diagonal": i == j,
                }
                for j in order
            ],
        }
        for i in order
    ]
    return {
        "heat_labels": [{"name": names[j], "short": _short(names[j], size)} for j in order],
        "heat_rows": rows,
        "heat_size": size,
    }
