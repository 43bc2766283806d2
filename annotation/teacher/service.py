"""The teacher as the rest of the app calls it: its settings, its prompt versions,
its few-shot memory, and its answers for texts outside any job (the serving fallback).

Labelling jobs (`labeling`) and synthetic data (`synthetic`) build on these; the LLM
itself is reached only through `client`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Max

from annotation.models import Example, Project, PromptVersion, Review, TeacherConfig
from annotation.teacher import client as teacher_boundary
from annotation.teacher.memory import fits, needs_reviewed
from tasks.base import AnswerError, Task

MEMORY_LIMIT = 5000


class LabelingError(ValueError):
    """A labelling request that cannot be carried out, with a message for the user."""


# --- configuration and prompts ------------------------------------------------------------


def teacher_config_for(project: Project) -> TeacherConfig:
    # A new project's answer budget is its task's (a span list needs more than a label).
    config, _ = TeacherConfig.objects.get_or_create(
        project=project, defaults={"max_tokens": project.task.teacher_max_tokens}
    )
    return config


def teacher_settings(config: TeacherConfig | dict) -> teacher_boundary.TeacherSettings:
    fields = teacher_boundary.TeacherSettings.__dataclass_fields__
    if isinstance(config, TeacherConfig):
        values = {name: getattr(config, name) for name in fields}
    else:
        values = {name: config[name] for name in fields if name in config}
    for name in ("price_input_per_mtok", "price_output_per_mtok"):
        values[name] = Decimal(str(values.get(name, "0")))
    # A row saved before the bounds (or written around the form) spends no more than they allow.
    for name, most in (
        ("max_tokens", TeacherConfig.MAX_TOKENS),
        ("self_consistency_samples", TeacherConfig.MAX_SAMPLES),
        ("timeout_seconds", TeacherConfig.MAX_TIMEOUT_SECONDS),
    ):
        if name in values:
            values[name] = min(values[name], most)
    return teacher_boundary.TeacherSettings(**values)


def teacher_config_snapshot(config: TeacherConfig) -> dict:
    snapshot = asdict(teacher_settings(config))
    snapshot["provider"] = config.provider
    for name in ("price_input_per_mtok", "price_output_per_mtok"):
        snapshot[name] = str(snapshot[name])
    return snapshot


def _project_labels(project: Project) -> list[dict]:
    # allows_many only where it says something (an extraction field holding one value), so
    # classification prompts keep the snapshot they always had and no new version is made.
    return [
        {
            "name": label.name,
            "description": label.description,
            **({} if label.allows_many else {"allows_many": False}),
        }
        for label in project.labels.all()
    ]


def prompt_version_current(project: Project, *, user=None) -> PromptVersion:
    """The prompt to use now: the latest, or a new version if labels or guidelines changed."""
    latest = project.prompt_versions.order_by("-version").first()
    labels = _project_labels(project)
    if latest and latest.labels == labels and latest.guidelines == project.guidelines:
        return latest
    if latest and not latest.is_used:
        # Nobody answered it yet: bring it up to date in place.
        latest.labels, latest.guidelines = labels, project.guidelines
        latest.save(update_fields=["labels", "guidelines"])
        return latest
    return PromptVersion.objects.create(
        project=project,
        version=(latest.version + 1) if latest else 1,
        instructions=latest.instructions if latest else project.task.default_instructions,
        guidelines=project.guidelines,
        labels=labels,
        few_shot=latest.few_shot if latest else PromptVersion.FewShot.NONE,
        few_shot_k=latest.few_shot_k if latest else 8,
        few_shot_per_label=latest.few_shot_per_label if latest else 2,
        fixed_examples=latest.fixed_examples if latest else [],
        created_by=user,
    )


@transaction.atomic
def prompt_version_update(
    *,
    project: Project,
    user,
    instructions: str,
    few_shot: str,
    few_shot_k: int,
    few_shot_per_label: int,
    fixed_examples: list[dict],
) -> PromptVersion:
    """Save prompt edits; a version that has answers is never changed, a new one is made."""
    # Primed, as the teacher's own replies are read: where a repeated value of a reply sits.
    fixed_examples = fixed_examples_checked(project.primed(), fixed_examples)
    current = prompt_version_current(project, user=user)
    fields = {
        "instructions": instructions.strip() or project.task.default_instructions,
        "few_shot": few_shot,
        "few_shot_k": few_shot_k,
        "few_shot_per_label": few_shot_per_label,
        "fixed_examples": fixed_examples,
    }
    if all(getattr(current, k) == v for k, v in fields.items()):
        return current
    if not current.is_used:
        for key, value in fields.items():
            setattr(current, key, value)
        current.save()
        return current
    return PromptVersion.objects.create(
        project=project,
        version=current.version + 1,
        guidelines=project.guidelines,
        labels=_project_labels(project),
        created_by=user,
        **fields,
    )


def fixed_examples_checked(task: Task, examples: list[dict]) -> list[dict]:
    """Fixed few-shot examples as ``[{"text", "label": <answer>}]``, each checked by the task.

    An example gives its answer as ``label`` (an answer: a label name, or an extraction
    ``{"spans": [...]}``) or as ``reply``, the JSON object the teacher itself answers in
    (``{"label": ...}``, or ``{"entities": [{"field", "text"}, ...]}`` with each value
    copied from the text), read by the task's own teacher parser.
    """
    checked = []
    for number, example in enumerate(examples, 1):
        text = str(example.get("text", "")).strip()
        if not text:
            raise LabelingError(f"Fixed example {number} has no text.")
        if "reply" in example:
            value, why = task.parse_teacher(json.dumps(example["reply"], ensure_ascii=False), text=text)
            if value is None:
                raise LabelingError(f"Fixed example {number}: {why}.")
        else:
            try:
                value = task.validate(example.get("label"), text=text)
            except AnswerError as exc:
                raise LabelingError(f"Fixed example {number}: {exc}.") from None
        checked.append({"text": text, "label": value})
    return checked


def fixed_example_line(task: Task, text: str, value) -> str:
    """A fixed example as the teacher page's text box shows it (PromptForm reads it back)."""
    if isinstance(value, str):
        return f"{value}: {text}"
    reply = json.loads(task.example_reply(value, text=text))
    return json.dumps({"text": text, **reply}, ensure_ascii=False)


def reviewed_example_line(project: Project) -> str:
    """The latest reviewed answer as a fixed-example line, ready to copy ("" if none)."""
    latest = (
        Review.objects.filter(
            example__project=project,
            example__is_gold=False,
            kind=Review.Kind.REVIEW,
            value__isnull=False,
        )
        .order_by("-created_at", "-pk")
        .values_list("example__text", "value")
        .first()
    )
    if latest is None:
        return ""
    checked = fits(project.task, [latest])
    return fixed_example_line(project.task, *checked[0]) if checked else ""


def agent_name(config_snapshot: dict, prompt_version: PromptVersion, *, memory: tuple | None = None) -> str:
    """``teacher:<model>:prompt-v<N>``. The offline teacher's answers change with what it learnt
    from, so its model carries its memory's version like the prompt's: ``<name>.mem<n>-<hash>``
    (``memory_version``), and gold and audit figures name the teacher they measured."""
    if config_snapshot.get("provider") == TeacherConfig.Provider.EMBEDDING:
        model = prompt_version.task.offline_teacher_name or "offline"
        if memory is not None:
            model += memory_version(*memory)
    else:
        model = config_snapshot["model"]
    return f"teacher:{model}:prompt-v{prompt_version.version}"


def memory_version(examples: list[tuple[str, object]], k: int) -> str:
    """``.mem<n>-<hash>``: the n examples the offline teacher learnt from (and its k), hashed;
    "" for one that answers from the label descriptions alone."""
    if not examples:
        return ""
    digest = hashlib.sha256(
        json.dumps([k, sorted([t, v] for t, v in examples)], sort_keys=True, default=str).encode()
    ).hexdigest()
    return f".mem{len(examples)}-{digest[:6]}"


# --- few-shot memory ---------------------------------------------------------------------------


def reviewed_memory(project: Project) -> list[tuple[str, object]]:
    """Reviewed, non-gold examples with their answers (valid for the project's task now):
    few-shot and offline-teacher memory."""
    rows = (
        Example.objects.for_project(project)
        .not_gold()
        .with_current_label()
        .filter(label_state="reviewed")
        .order_by("-pk")
        .values_list("text", "current_label")[:MEMORY_LIMIT]
    )
    return fits(project.task, rows)


def few_shot_chooser(
    prompt: PromptVersion, project: Project
) -> Callable[[list[str]], list[list[tuple[str, object]]]]:
    task = prompt.task
    if prompt.few_shot == PromptVersion.FewShot.FIXED:
        fixed = fits(task, [(e["text"], e.get("label")) for e in prompt.fixed_examples])
        return lambda texts: [fixed for _ in texts]
    if prompt.few_shot == PromptVersion.FewShot.SIMILAR:
        # Valid under the prompt's own labels (fields): a few-shot answer the prompt
        # does not define would teach the teacher a category it may not use.
        memory = fits(task, reviewed_memory(project))
        if not memory:
            return lambda texts: [[] for _ in texts]
        from distillapp.ml import embed_texts

        memory_vectors = embed_texts([t for t, _ in memory])
        # The cap's groups: a label for classification; for extraction the fields an
        # answer holds and how often ("date ×1 · people ×1"), so shapes vary too.
        groups = [task.summary(value) for _, value in memory]

        def choose(texts: list[str]) -> list[list[tuple[str, object]]]:
            similarities = embed_texts(texts) @ memory_vectors.T
            chosen = []
            for row in similarities:
                picked, per_label = [], {}
                for index in row.argsort()[::-1]:
                    text, label = memory[index]
                    group = groups[index]
                    if text in texts or per_label.get(group, 0) >= prompt.few_shot_per_label:
                        continue
                    per_label[group] = per_label.get(group, 0) + 1
                    picked.append((text, label))
                    if len(picked) >= prompt.few_shot_k:
                        break
                chosen.append(picked[::-1])  # most similar last, next to the text
            return chosen

        return choose
    return lambda texts: [[] for _ in texts]


# --- answering live traffic ------------------------------------------------------------------------


def reviews_key(project: Project) -> tuple:
    """What the project's reviewed answers are now: any verdict, changed answer, undo or gold
    draw changes it. Two aggregate queries: far cheaper than reading the answers."""
    reviews = Review.objects.filter(example__project=project).aggregate(n=Count("pk"), last=Max("pk"))
    gold = Example.objects.for_project(project).filter(is_gold=True).count()
    return (reviews["n"], reviews["last"], gold)


# The serving fallback primes its task on every request: reading the reviewed answers each time
# would cost more than the rest of its look-ups together. Kept per project and prompt fields, it
# asks whether they changed (``reviews_key``) at most every PRIMED_RECHECK_SECONDS and reads
# them again only when they did (bench/README.md, "Teacher placement").
PRIMED_RECHECK_SECONDS = 30.0
_primed_tasks: dict[tuple, tuple[float, tuple, Task]] = {}
_PRIMED_TASKS_KEPT = 32
_clock = time.monotonic  # tests move it forward


def primed_task(project: Project, prompt: PromptVersion) -> Task:
    """The prompt's task primed with the project's reviewed answers (``Project.primed``), kept
    while what the task is made of stays the same; new reviews reach it within
    PRIMED_RECHECK_SECONDS."""
    task = prompt.task
    if not task.learns_from_reviewed:
        return task
    made_of = json.dumps(
        [project.task_type, prompt.labels, project.task_options], sort_keys=True, default=str
    )
    key = (project.pk, prompt.pk, made_of)
    now = _clock()
    kept = _primed_tasks.get(key)
    if kept is not None and now < kept[0]:
        return kept[2]
    reviewed = reviews_key(project)
    primed = kept[2] if kept is not None and kept[1] == reviewed else project.primed(task)
    if len(_primed_tasks) >= _PRIMED_TASKS_KEPT:
        _primed_tasks.clear()
    _primed_tasks[key] = (now + PRIMED_RECHECK_SECONDS, reviewed, primed)
    return primed


def primed_tasks_forget() -> None:
    """Drop this process's primed tasks (tests: ids repeat across them)."""
    _primed_tasks.clear()


@functools.lru_cache(maxsize=8)
def _embedding_teacher(project_id: int, prompt_version_id: int, memory_key: tuple):
    """The offline teacher with its memory embedded, kept while the memory is unchanged, and
    its memory (examples, k) for its name."""
    from annotation.teacher.memory import memory_for_prompt

    project = Project.objects.get(pk=project_id)
    prompt = PromptVersion.objects.get(pk=prompt_version_id)
    reviewed = reviewed_memory(project) if needs_reviewed(prompt) else []
    memory, k = memory_for_prompt(prompt, reviewed)
    return prompt.task.offline_teacher(memory, k=k), (memory, k)


def teacher_answers(project: Project, texts: list[str]) -> list[teacher_boundary.TeacherAnswer]:
    """The teacher's answers for texts outside any job (the serving fallback), in order."""
    config = teacher_config_for(project)
    prompt = prompt_version_current(project)
    agent = agent_name(teacher_config_snapshot(config), prompt)
    if config.provider == TeacherConfig.Provider.EMBEDDING:
        # Any verdict, changed answer, undo or gold draw changes what it learns from (and its name).
        memory_key = reviews_key(project)
        started = time.perf_counter()
        model, memory = _embedding_teacher(project.pk, prompt.pk, memory_key)
        agent = agent_name(teacher_config_snapshot(config), prompt, memory=memory)
        predictions = model.predict(texts)
        per_text = int((time.perf_counter() - started) * 1000 / max(1, len(texts)))
        return [
            teacher_boundary.TeacherAnswer(
                value=value,
                confidence=confidence,
                confidence_method=model.confidence_method,
                latency_ms=per_text,
                attempts=1,
                agent=agent,
            )
            for value, confidence in predictions
        ]
    settings = teacher_settings(config)
    # Primed: a value the text holds more often than the teacher names it sits where reviewed
    # answers put its field's values (Task.with_reviewed), as in labelling jobs.
    task = primed_task(project, prompt)
    system_prompt = teacher_boundary.render_system_prompt(
        instructions=prompt.instructions, guidelines=prompt.guidelines, task=task
    )
    shots = few_shot_chooser(prompt, project)(texts)

    async def ask() -> list[teacher_boundary.TeacherAnswer]:
        client = teacher_boundary.OpenAITeacher(settings, task)
        semaphore = asyncio.Semaphore(settings.concurrency)

        async def one(text, few):
            async with semaphore:
                return (
                    await client.ask(
                        teacher_boundary.render_messages(
                            system_prompt=system_prompt, text=text, task=task, few_shot=few
                        )
                    )
                )[-1]

        try:
            return await asyncio.gather(*(one(t, f) for t, f in zip(texts, shots, strict=True)))
        finally:
            await client.close()

    answers = asyncio.run(ask())
    for answer in answers:
        answer.agent = agent
    return answers
