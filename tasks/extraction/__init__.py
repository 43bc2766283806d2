"""Extraction: the project's fields found as character spans in each text.

``ExtractionTask`` answers to the task seam (tasks.base); ``spans`` holds the span
utilities, ``formats`` the file readers and writers, ``measure`` agreement and metrics.
"""

from __future__ import annotations

from tasks.extraction.task import ExtractionTask

__all__ = ["ExtractionTask"]
