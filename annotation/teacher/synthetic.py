"""Synthetic examples: the teacher LLM writes new texts per label.

Each call asks for a handful of texts for one label, with a persona, tone,
length range, noise level and difficulty drawn for that call (near-misses
name the labels most easily confused with it), optionally seeded with a few
real texts for style. What comes back is checked, exact and near duplicates
(MiniLM cosine above a threshold, against the project and the job itself)
are dropped and counted, and the rest become `synthetic` examples with the
generating label as a proposal. The job counts what each label still needs
from the database, so a killed job resumes without writing extra examples.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
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
    _config_snapshot,
    teacher_config_for,
    teacher_settings,
)
from distillapp import rows

logger = logging.getLogger(__name__)

PER_CALL = 10
NEAR_DUPLICATE_POOL = 5000
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
    if not task.writes_synthetic:
        # The prompt and the stored proposal are a label's; texts written with their
        # span answers (values verbatim, never gold) are not built yet.
        raise LabelingError(
            f"Synthetic {task.title.lower()} data comes later: the teacher cannot write "
            f"{task.title.lower()} examples yet."
        )
    config = teacher_config_for(project)
    if config.provider != TeacherConfig.Provider.OPENAI:
        raise LabelingError(
            "Writing examples needs an LLM teacher; the offline embedding teacher cannot write text."
        )
    known = list(project.labels.values_list("name", flat=True))
    chosen = labels or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise LabelingError(f"Unknown labels: {', '.join(unknown)}.")
    if not chosen:
        raise LabelingError("The project has no labels yet.")
    if not 1 <= min_words <= max_words:
        raise LabelingError("The length range must have 1 <= minimum <= maximum words.")
    return SyntheticJob.objects.create(
        project=project,
        teacher=_config_snapshot(config),
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
    rows.enqueue(SyntheticJob, job.pk)


def synthetic_job_cancel(*, job: SyntheticJob) -> None:
    rows.cancel(SyntheticJob, job.pk)


def synthetic_job_claim(job_id: int) -> bool:
    return rows.claim(SyntheticJob, job_id)


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


def _confusable(labels: list[dict]) -> dict[str, list[str]]:
    """For each label, the two other labels whose definitions are closest."""
    from distillapp.ml import embed_texts

    if len(labels) < 2:
        return {label["name"]: [] for label in labels}
    vectors = embed_texts([f"{lab['name']}: {lab.get('description', '')}" for lab in labels])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return {
        label["name"]: [labels[j]["name"] for j in similarity[i].argsort()[::-1][:2]]
        for i, label in enumerate(labels)
    }


def synthetic_job_run(*, job: SyntheticJob) -> SyntheticJob:
    try:
        _run(job)
    except Exception as exc:
        logger.exception("Synthetic job %s failed", job.pk)
        SyntheticJob.objects.filter(pk=job.pk).update(
            status=SyntheticJob.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        raise
    job.refresh_from_db()
    return job


def _run(job: SyntheticJob) -> None:
    from distillapp.ml import embed_texts

    project = job.project
    definitions = {
        label.name: {"name": label.name, "description": label.description} for label in project.labels.all()
    }
    labels = [definitions[name] for name in job.labels if name in definitions]
    confusable = _confusable(list(definitions.values()))
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
            SyntheticJob.objects.filter(pk=job.pk).update(
                status=SyntheticJob.Status.CANCELLED, finished_at=timezone.now()
            )
            return
        missing = {
            name: job.per_label - n for name, n in _created_per_label(job).items() if n < job.per_label
        }
        if not missing:
            break
        calls = []
        for label in labels:
            need = missing.get(label["name"], 0)
            while need > 0:
                count = min(PER_CALL, need)
                need -= count
                style = {
                    "persona": rng.choice(job.personas),
                    "tone": rng.choice(job.tones),
                    "difficulty": job.difficulty,
                }
                messages = teacher_boundary.render_generation_messages(
                    label=label,
                    other_labels=[d for d in definitions.values() if d["name"] != label["name"]],
                    guidelines=project.guidelines,
                    count=count,
                    persona=style["persona"],
                    tone=style["tone"],
                    min_words=job.min_words,
                    max_words=job.max_words,
                    noise=job.noise,
                    difficulty=job.difficulty,
                    confusable=confusable.get(label["name"], []),
                    seeds=rng.sample(real, min(3, len(real))) if real else [],
                )
                calls.append((label, style, messages))
        results = asyncio.run(_call_all(settings, [m for _, _, m in calls]))
        pool = _store(job, calls, results, pool, agent)
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


async def _call_all(settings, all_messages: list[list[dict]]) -> list[teacher_boundary.Generated]:
    client = teacher_boundary.OpenAITeacher(settings, task=None)  # writes texts: no answers to parse
    semaphore = asyncio.Semaphore(settings.concurrency)

    async def one(messages):
        async with semaphore:
            return await client.generate(messages, temperature=max(settings.temperature, 0.9))

    try:
        return await asyncio.gather(*(one(m) for m in all_messages))
    finally:
        await client.close()


def _store(job: SyntheticJob, calls, results, pool: np.ndarray, agent: str) -> np.ndarray:
    """Check, deduplicate and save one round of generated texts; returns the grown pool.

    Each call's examples, proposals and counts (tokens, cost) are written in one
    transaction: a job killed between two calls has counted each paid call once.
    """
    from distillapp.ml import embed_texts

    max_chars = django_settings.IMPORT_MAX_TEXT_CHARS
    created = _created_per_label(job)
    for (label, style, _messages), result in zip(calls, results, strict=True):
        counts = {"generated": 0, "exact": 0, "near": 0, "failed": int(bool(result.error))}
        kept: list[str] = []
        texts = [] if result.error else [t for t in result.texts if len(t) <= max_chars]
        counts["generated"] = len(texts)
        vectors = embed_texts(texts) if texts else []
        for text, vector in zip(texts, vectors, strict=True):
            if created[label["name"]] + len(kept) >= job.per_label:
                break
            if pool.shape[0] and float((pool @ vector).max()) > job.near_duplicate_threshold:
                # Exact copies score 1.0 too; tell them apart for the counts.
                hashes = {content_hash(text)}
                is_exact = Example.objects.filter(
                    project=job.project, content_hash__in=hashes
                ).exists() or any(content_hash(k) in hashes for k in kept)
                counts["exact" if is_exact else "near"] += 1
                continue
            kept.append(text)
            pool = np.vstack([pool, vector[None, :]])
        share = (result.cost_usd / len(kept)).quantize(Decimal("0.00000001")) if kept else Decimal("0")
        new_ids: list[int] = []
        with transaction.atomic():
            for i, text in enumerate(kept):
                try:
                    with transaction.atomic():
                        example = Example.objects.create(
                            project=job.project,
                            text=text,
                            source=Example.Source.SYNTHETIC,
                            metadata={"synthetic_job": job.pk, "label": label["name"], **style},
                        )
                except IntegrityError:
                    counts["exact"] += 1  # same text already in the project
                    continue
                Proposal.objects.create(
                    example=example,
                    agent=agent,
                    value=label["name"],
                    raw_response=text,
                    input_tokens=result.input_tokens if i == 0 else 0,
                    output_tokens=result.output_tokens if i == 0 else 0,
                    # The call's cost spread over the texts kept from it.
                    cost_usd=result.cost_usd - share * (len(kept) - 1) if i == 0 else share,
                )
                created[label["name"]] += 1
                new_ids.append(example.pk)
            Example.objects.filter(pk__in=new_ids).sync_queue_fields()
            SyntheticJob.objects.filter(pk=job.pk).update(
                generated=F("generated") + counts["generated"],
                created=sum(created.values()),
                exact_duplicates=F("exact_duplicates") + counts["exact"],
                near_duplicates=F("near_duplicates") + counts["near"],
                failed_calls=F("failed_calls") + counts["failed"],
                input_tokens=F("input_tokens") + result.input_tokens,
                output_tokens=F("output_tokens") + result.output_tokens,
                cost_usd=F("cost_usd") + result.cost_usd,
                heartbeat_at=timezone.now(),
            )
    job.refresh_from_db()
    return pool
