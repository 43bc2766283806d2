"""Synthetic examples: the teacher LLM writes new texts per label (per field, for extraction).

Each call asks for a handful of examples written for one category (a label; a field),
with a persona, tone, length range, noise level and difficulty drawn for that call
(near-misses name the categories most easily confused with it), optionally seeded with a
few real, never gold, texts for style. The task says what to write and in what shape
(``Task.synthetic_prompt`` / ``synthetic_item_schema``) and reads each example back into
a text and its answer (``synthetic_item``): a label, or spans whose values it locates in
the text. An example the task refuses (a value that is not in its text) is counted with
its reason and never stored. Exact and near duplicates (MiniLM cosine above a threshold,
against the project and the job itself) are dropped and counted, and the rest become
`synthetic` examples with their answer as the teacher's proposal. The job counts what
each category still needs from the database, so a killed job resumes without writing
extra examples.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from decimal import Decimal

import numpy as np
from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Example, Project, Proposal, SyntheticJob, TeacherConfig, content_hash
from annotation.teacher import client as teacher_boundary
from annotation.teacher.service import (
    LabelingError,
    teacher_config_for,
    teacher_config_snapshot,
    teacher_settings,
)
from distillapp import jobs
from tasks.base import AnswerError, Category, SyntheticBrief, Task

PER_CALL = 10
NEAR_DUPLICATE_POOL = 5000
INVALID_EXAMPLES_KEPT = 20  # refused examples shown with their reason on the job's row
DEFAULT_PERSONAS = [
    "a busy professional",
    "a first-time customer",
    "a frustrated long-time user",
    "a non-native English speaker",
    "a polite retiree",
    "a terse developer",
]
DEFAULT_TONES = ["neutral", "polite", "angry", "confused", "urgent"]


def synthetic_job_create(
    *,
    project: Project,
    user,
    labels: list[str] | None = None,
    per_label: int = 20,
    personas: list[str] | None = None,
    tones: list[str] | None = None,
    min_words: int = 5,
    max_words: int = 60,
    noise: str = SyntheticJob.Noise.LIGHT,
    difficulty: str = SyntheticJob.Difficulty.MIXED,
    seed_with_real: bool = True,
    near_duplicate_threshold: float = 0.92,
) -> SyntheticJob:
    task = project.task
    noun = task.category_noun
    if not task.writes_synthetic:
        raise LabelingError(f"The teacher cannot write {task.title.lower()} examples.")
    config = teacher_config_for(project)
    if config.provider != TeacherConfig.Provider.OPENAI:
        raise LabelingError("Writing examples needs an LLM teacher; the offline teacher cannot write text.")
    if task.uses_categories:
        known = list(project.labels.values_list("name", flat=True))
        chosen = labels or known
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise LabelingError(f"Unknown {noun}s: {', '.join(unknown)}.")
        if not chosen:
            raise LabelingError(f"The project has no {noun}s yet.")
    else:
        # A task without categories writes about topics the lead names (a summary's subject).
        chosen = list(dict.fromkeys(t.strip()[:100] for t in labels or [] if t.strip()))
        if not chosen:
            raise LabelingError(f"Name at least one {noun} to write about, one per line.")
    if not 1 <= min_words <= max_words:
        raise LabelingError("The length range must have 1 <= minimum <= maximum words.")
    return SyntheticJob.objects.create(
        project=project,
        teacher=teacher_config_snapshot(config),
        labels=chosen,
        per_label=per_label,
        personas=personas or DEFAULT_PERSONAS,
        tones=tones or DEFAULT_TONES,
        min_words=min_words,
        max_words=max_words,
        noise=noise,
        difficulty=difficulty,
        seed_with_real=seed_with_real,
        near_duplicate_threshold=near_duplicate_threshold,
        requested=per_label * len(chosen),
        created_by=user,
    )


def synthetic_job_start(*, job: SyntheticJob) -> None:
    jobs.enqueue(SyntheticJob, job.pk)


def synthetic_job_claim(job_id: int) -> bool:
    return jobs.claim(SyntheticJob, job_id)


def _created_per_label(job: SyntheticJob) -> dict[str, int]:
    counts = dict.fromkeys(job.labels, 0)
    rows = Example.objects.filter(
        project=job.project, source=Example.Source.SYNTHETIC, metadata__synthetic_job=job.pk
    ).values_list("metadata", flat=True)
    for metadata in rows:
        label = metadata.get("label")
        if label in counts:
            counts[label] += 1
    return counts


def _confusable(categories: list[Category]) -> dict[str, list[str]]:
    """For each category, the two others whose definitions are closest."""
    from distillapp.ml import embed_texts

    if len(categories) < 2:
        return {c.name: [] for c in categories}
    vectors = embed_texts([f"{c.name}: {c.description}" for c in categories])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return {
        c.name: [categories[j].name for j in similarity[i].argsort()[::-1][:2]]
        for i, c in enumerate(categories)
    }


def synthetic_job_run(*, job: SyntheticJob) -> SyntheticJob:
    with jobs.running(SyntheticJob, job.pk):
        _run(job)
    job.refresh_from_db()
    return job


def _run(job: SyntheticJob) -> None:
    from distillapp.ml import embed_texts

    project = job.project
    # Primed: a value a written text holds more often than it is listed sits where reviewed
    # answers put its field's values (Task.with_reviewed), as in labelling jobs.
    task = project.primed()
    if task.uses_categories:
        by_name = {c.name: c for c in task.categories}
        chosen = [by_name[name] for name in job.labels if name in by_name]
        confusable = _confusable(task.categories)
    else:  # the lead's topics stand in for categories
        chosen = [Category(name=topic) for topic in job.labels]
        confusable = _confusable(chosen)
    settings = teacher_settings(job.teacher)
    agent = f"teacher:{settings.model}:synthetic"
    rng = random.Random(job.pk)
    existing = list(
        Example.objects.for_project(project)
        .order_by("-pk")
        .values_list("text", flat=True)[:NEAR_DUPLICATE_POOL]
    )
    pool = embed_texts(existing) if existing else np.zeros((0, 384), dtype=np.float32)
    real = (
        list(
            # Gold texts never seed the LLM: a written paraphrase of one would train the
            # student on the gold set it is measured against.
            Example.objects.for_project(project)
            .not_gold()
            .exclude(source=Example.Source.SYNTHETIC)
            .order_by("?")
            .values_list("text", flat=True)[:50]
        )
        if job.seed_with_real
        else []
    )
    max_rounds = 3 * math.ceil(job.per_label / PER_CALL) + 2

    for _round in range(max_rounds):
        job.refresh_from_db(fields=["is_cancel_requested"])
        if job.is_cancel_requested:
            raise jobs.Cancelled
        missing = {
            name: job.per_label - n for name, n in _created_per_label(job).items() if n < job.per_label
        }
        if not missing:
            break
        calls = []
        for category in chosen:
            need = missing.get(category.name, 0)
            while need > 0:
                count = min(PER_CALL, need)
                need -= count
                style = {
                    "persona": rng.choice(job.personas),
                    "tone": rng.choice(job.tones),
                    "difficulty": job.difficulty,
                }
                brief = SyntheticBrief(
                    category=category,
                    count=count,
                    difficulty=job.difficulty,
                    confusable=tuple(confusable.get(category.name, [])),
                    seed=rng.randrange(2**31),
                )
                messages = teacher_boundary.render_generation_messages(
                    task_prompt=task.synthetic_prompt(brief),
                    guidelines=project.guidelines,
                    count=count,
                    persona=style["persona"],
                    tone=style["tone"],
                    min_words=job.min_words,
                    max_words=job.max_words,
                    noise=job.noise,
                    seeds=rng.sample(real, min(3, len(real))) if real else [],
                )
                calls.append((brief, style, messages))
        results = asyncio.run(_call_all(settings, task, [m for _, _, m in calls]))
        pool = _store(job, task, calls, results, pool, agent)
    job.refresh_from_db()
    shortfall = job.requested - job.created
    SyntheticJob.objects.filter(pk=job.pk).update(
        status=SyntheticJob.Status.SUCCEEDED,
        finished_at=timezone.now(),
        error=(
            f"{shortfall} examples short: the teacher kept repeating itself or failing."
            if shortfall > 0
            else ""
        ),
    )


async def _call_all(settings, task: Task, all_messages: list[list[dict]]) -> list[teacher_boundary.Generated]:
    client = teacher_boundary.OpenAITeacher(settings, task=None)  # writes examples: no answers to parse
    semaphore = asyncio.Semaphore(settings.concurrency)
    item_schema = task.synthetic_item_schema()

    async def one(messages):
        async with semaphore:
            return await client.generate(
                messages, item_schema=item_schema, temperature=max(settings.temperature, 0.9)
            )

    try:
        return await asyncio.gather(*(one(m) for m in all_messages))
    finally:
        await client.close()


def _store(job: SyntheticJob, task: Task, calls, results, pool: np.ndarray, agent: str) -> np.ndarray:
    """Check, deduplicate and save one round of written examples; returns the grown pool.

    Each call's examples, proposals and counts (tokens, cost, refused examples) are
    written in one transaction: a job killed between two calls has counted each paid
    call once.
    """
    from distillapp.ml import embed_texts

    max_chars = django_settings.IMPORT_MAX_TEXT_CHARS
    created = _created_per_label(job)
    for (brief, style, _messages), result in zip(calls, results, strict=True):
        name = brief.category.name
        items = [] if result.error else result.items
        counts = {"generated": len(items), "exact": 0, "near": 0, "failed": int(bool(result.error))}
        checked, invalid = [], []
        for item in items:
            try:
                text, answer = task.synthetic_item(item, brief=brief)
                if len(text) > max_chars:
                    raise AnswerError(f"the text is longer than {max_chars:,} characters")
            except AnswerError as exc:
                invalid.append(
                    {"label": name, "example": json.dumps(item, ensure_ascii=False)[:500], "reason": str(exc)}
                )
                continue
            checked.append((text, answer, item))
        kept: list[tuple[str, object, object]] = []
        vectors = embed_texts([text for text, _, _ in checked]) if checked else []
        for (text, answer, item), vector in zip(checked, vectors, strict=True):
            if created[name] + len(kept) >= job.per_label:
                break
            if pool.shape[0] and float((pool @ vector).max()) > job.near_duplicate_threshold:
                # Exact copies score 1.0 too; tell them apart for the counts.
                hashes = {content_hash(text)}
                is_exact = Example.objects.filter(
                    project=job.project, content_hash__in=hashes
                ).exists() or any(content_hash(k) in hashes for k, _, _ in kept)
                counts["exact" if is_exact else "near"] += 1
                continue
            kept.append((text, answer, item))
            pool = np.vstack([pool, vector[None, :]])
        share = (result.cost_usd / len(kept)).quantize(Decimal("0.00000001")) if kept else Decimal("0")
        new_ids: list[int] = []
        placed: Counter = Counter()
        with transaction.atomic():
            for i, (text, answer, item) in enumerate(kept):
                try:
                    with transaction.atomic():
                        example = Example.objects.create(
                            project=job.project,
                            text=text,
                            source=Example.Source.SYNTHETIC,
                            # "label": the category it was written for (a field, for
                            # extraction); what each still needs is counted from it.
                            metadata={"synthetic_job": job.pk, "label": name, **style},
                        )
                except IntegrityError:
                    counts["exact"] += 1  # same text already in the project
                    continue
                Proposal.objects.create(
                    example=example,
                    agent=agent,
                    value=answer,
                    raw_response=json.dumps(item, ensure_ascii=False),
                    input_tokens=result.input_tokens if i == 0 else 0,
                    output_tokens=result.output_tokens if i == 0 else 0,
                    # The call's cost spread over the examples kept from it.
                    cost_usd=result.cost_usd - share * (len(kept) - 1) if i == 0 else share,
                )
                created[name] += 1
                new_ids.append(example.pk)
                placed.update(task.answer_notes(answer, text=text))
            Example.objects.filter(pk__in=new_ids).sync_queue_fields()
            shown, notes = (
                SyntheticJob.objects.select_for_update()
                .values_list("invalid_examples", "answer_notes")
                .get(pk=job.pk)
            )
            # How the kept examples' located values were placed (Task.answer_notes), as a
            # labelling job counts its answers'.
            notes = Counter(notes or {})
            notes.update(placed)
            SyntheticJob.objects.filter(pk=job.pk).update(
                generated=F("generated") + counts["generated"],
                created=sum(created.values()),
                exact_duplicates=F("exact_duplicates") + counts["exact"],
                near_duplicates=F("near_duplicates") + counts["near"],
                invalid=F("invalid") + len(invalid),
                invalid_examples=(shown + invalid)[:INVALID_EXAMPLES_KEPT],
                answer_notes=dict(notes),
                failed_calls=F("failed_calls") + counts["failed"],
                input_tokens=F("input_tokens") + result.input_tokens,
                output_tokens=F("output_tokens") + result.output_tokens,
                cost_usd=F("cost_usd") + result.cost_usd,
                heartbeat_at=timezone.now(),
            )
    job.refresh_from_db()
    return pool
