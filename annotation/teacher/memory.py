"""The offline teacher's memory under a prompt version: which examples it learns from.

What the offline teacher *is* belongs to the task type (``Task.offline_teacher``); this
module picks its examples, following the prompt's few-shot setting as an LLM prompt would.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.base import AnswerError, Task


def fits(task: Task, pairs: Sequence[tuple[str, object]]) -> list[tuple[str, object]]:
    """The (text, answer) pairs whose answer is valid for the task, in its normal form."""
    kept = []
    for text, value in pairs:
        try:
            kept.append((text, task.validate(value, text=text)))
        except (AnswerError, TypeError, KeyError, AttributeError):
            continue  # a label renamed or removed since, or another task's answer
    return kept


def memory_for_prompt(prompt, reviewed: Sequence[tuple[str, object]]) -> tuple[list[tuple[str, object]], int]:
    """The examples the offline teacher learns from, and how many neighbours vote.

    A zero-shot offline teacher (classification's embedding classifier) reads no
    prompt text, but it follows the same choice an LLM prompt makes: "none" is
    zero-shot from the label descriptions alone, "fixed" lets only the lead's fixed
    examples vote, and "similar" lets the ``few_shot_k`` nearest reviewed examples vote
    (the per-label cap of an LLM prompt has no counterpart here: every prototype
    always votes). One that learns only from examples (extraction's dictionary) gets
    every reviewed example and the fixed ones, whatever the setting.
    """
    task = prompt.task
    fixed = fits(task, [(e["text"], e.get("label")) for e in prompt.fixed_examples])
    if not task.offline_teacher_zero_shot:
        return fixed + fits(task, reviewed), max(1, prompt.few_shot_k)
    if prompt.few_shot == "fixed":
        return fixed, max(1, len(fixed))
    if prompt.few_shot == "similar":
        return fits(task, reviewed), max(1, prompt.few_shot_k)
    return [], 1


def needs_reviewed(prompt) -> bool:
    """Does the offline teacher under this prompt learn from the reviewed examples?"""
    return prompt.few_shot == "similar" or not prompt.task.offline_teacher_zero_shot
