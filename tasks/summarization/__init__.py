"""Summarisation: a short summary of each text, written to the project's target length.

``SummarizationTask`` answers to the task seam (tasks.base); ``units`` splits a text into the
sentences or dialogue turns an extractive summary is made of, ``measure`` holds ROUGE, the
oracle and the grounding check, ``student`` the extractive student and ``seq2seq`` the
abstractive one (``finetune`` picks between them by the base model).
"""

from __future__ import annotations

from tasks.summarization.task import SummarizationTask

__all__ = ["SummarizationTask"]
