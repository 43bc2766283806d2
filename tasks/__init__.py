"""Task types: everything that depends on what an answer is, one module per type.

``task_for(type, categories)`` is the one place that branches on the task type; shared
code holds the ``Task`` it returns (``Project.task``) and asks it. Adding a task type
is a module under ``tasks/`` with its student, its card template under
``templates/tasks/<type>/`` and one line in ``TASK_TYPES``.
"""

from __future__ import annotations

from importlib import import_module

from tasks.base import AnswerError, AnswerFileError, Category, OptionField, Task

# type -> (title, "module:class"); the class is imported on first use so that a page never
# loads every type.
TASK_TYPES = {
    "classification": ("Classification", "tasks.classification:ClassificationTask"),
    "extraction": ("Extraction", "tasks.extraction:ExtractionTask"),
    "summarization": ("Summarisation", "tasks.summarization:SummarizationTask"),
}


def task_choices() -> list[tuple[str, str]]:
    """(type, title) of every registered task type: ``Project.task_type``'s choices."""
    return [(name, title) for name, (title, _) in TASK_TYPES.items()]


def task_class(task_type: str) -> type[Task]:
    try:
        module, _, name = TASK_TYPES[task_type][1].partition(":")
    except KeyError:
        raise ValueError(f"unknown task type {task_type!r}; known: {', '.join(TASK_TYPES)}") from None
    return getattr(import_module(module), name)


def task_for(task_type: str, categories: list[Category], options: dict | None = None) -> Task:
    return task_class(task_type)(categories, options)


__all__ = [
    "AnswerError",
    "AnswerFileError",
    "Category",
    "OptionField",
    "Task",
    "TASK_TYPES",
    "task_choices",
    "task_class",
    "task_for",
]
