"""Task types: everything that depends on what an answer is, one module per type.

``task_for(type, categories)`` is the one place that branches on the task type; shared
code holds the ``Task`` it returns (``Project.task``) and asks it. Adding a task type
is a module under ``tasks/`` with its student, its card template under
``templates/tasks/<type>/`` and one line in ``TASK_TYPES``.
"""

from __future__ import annotations

from importlib import import_module

from tasks.base import Answer, AnswerError, Category, Task

# type -> "module:class"; imported on first use so that a page never loads every type.
TASK_TYPES = {
    "classification": "tasks.classification:ClassificationTask",
    "extraction": "tasks.extraction:ExtractionTask",
}


def task_class(task_type: str) -> type[Task]:
    try:
        module, _, name = TASK_TYPES[task_type].partition(":")
    except KeyError:
        raise ValueError(f"unknown task type {task_type!r}; known: {', '.join(TASK_TYPES)}") from None
    return getattr(import_module(module), name)


def task_for(task_type: str, categories: list[Category]) -> Task:
    return task_class(task_type)(categories)


__all__ = ["Answer", "AnswerError", "Category", "Task", "TASK_TYPES", "task_class", "task_for"]
