"""Classification: an answer is one label name of the project's label set."""

from __future__ import annotations

from tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
