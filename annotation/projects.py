"""Workflows of the annotation app that touch several models."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Prefetch, QuerySet

from annotation import corpus, importing
from annotation.importing import import_batch_claim, import_batch_run
from annotation.models import (
    IMPORT_AGENT,
    Example,
    GoldSet,
    GoldSetItem,
    ImportBatch,
    Label,
    Membership,
    Project,
    Proposal,
    Review,
    next_free_key,
)
from distillapp import rows

logger = logging.getLogger(__name__)


class ServiceError(ValueError):
    """A request that cannot be carried out, with a message for the user."""


# --- projects, labels, members -----------------------------------------------------


@transaction.atomic
def project_create(
    *,
    name: str,
    slug: str,
    user,
    task_type: str = Project.TaskType.CLASSIFICATION,
    guidelines: str = "",
    labels: list[tuple[str, str]] | None = None,
) -> Project:
    project = Project.objects.create(
        name=name, slug=slug, task_type=task_type, guidelines=guidelines, created_by=user
    )
    Membership.objects.create(project=project, user=user, role=Membership.Role.LEAD)
    for name_, description in labels or []:
        label_create(project=project, name=name_, description=description)
    return project


def label_create(*, project: Project, name: str, description: str = "", key: str = "") -> Label:
    name = name.strip()
    if project.labels.filter(name=name).exists():
        raise ServiceError(f"The label {name!r} already exists.")
    existing = list(project.labels.values_list("key", "order"))
    used = {k for k, _ in existing if k}
    if key and key in used:
        raise ServiceError(f"The key {key!r} is already taken by another label.")
    return Label.objects.create(
        project=project,
        name=name,
        description=description.strip(),
        key=key or next_free_key(used),
        order=max((o for _, o in existing), default=0) + 1,
    )


@transaction.atomic
def label_update(*, label: Label, name: str, description: str, key: str, order: int) -> Label:
    """Change a label; a rename carries over to every answer that used the old name."""
    name = name.strip()
    project = label.project
    if name != label.name and project.labels.filter(name=name).exists():
        raise ServiceError(f"The label {name!r} already exists.")
    if key and project.labels.filter(key=key).exclude(pk=label.pk).exists():
        raise ServiceError(f"The key {key!r} is already taken by another label.")
    old_name = label.name
    label.name, label.description, label.key, label.order = name, description.strip(), key, order
    label.save()
    if old_name != name:
        # Answers store the label by name, so a rename rewrites them in the
        # same transaction; otherwise they would point at a missing label.
        Proposal.objects.filter(example__project=project, value=old_name).update(value=name)
        Review.objects.filter(example__project=project, value=old_name).update(value=name)
        GoldSetItem.objects.filter(
            gold_set__project=project, gold_set__frozen_at__isnull=True, label=old_name
        ).update(label=name)
    return label


def label_is_used(label: Label) -> bool:
    project = label.project
    return (
        Proposal.objects.filter(example__project=project, value=label.name).exists()
        or Review.objects.filter(example__project=project, value=label.name).exists()
        or GoldSetItem.objects.filter(gold_set__project=project, label=label.name).exists()
    )


def label_delete(*, label: Label) -> None:
    if label_is_used(label):
        raise ServiceError(
            f"The label {label.name!r} is used by proposals, reviews or gold items; "
            "rename it instead of deleting it."
        )
    label.delete()


def membership_set(*, project: Project, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ServiceError(f"There is no user called {username!r}.")
    leads = project.memberships.filter(role=Membership.Role.LEAD)
    if role != Membership.Role.LEAD and list(leads.values_list("user_id", flat=True)) == [user.pk]:
        raise ServiceError("A project needs at least one lead; make someone else lead first.")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def membership_remove(*, membership: Membership) -> None:
    project = membership.project
    if (
        membership.role == Membership.Role.LEAD
        and project.memberships.filter(role=Membership.Role.LEAD).count() == 1
    ):
        raise ServiceError("A project needs at least one lead; add another lead first.")
    membership.delete()


# --- imports ------------------------------------------------------------------------


def import_batch_create(
    *,
    project: Project,
    user,
    file_name: str,
    fileobj: BinaryIO | None = None,
    path: Path | None = None,
    fmt: str | None = None,
    text_column: str = "text",
    label_column: str = "",
    id_column: str = "id",
    create_labels: bool = False,
    label_meaning: str = importing.LABELS_PREDICTIONS,
    label_agent: str = "",
    keep_columns: list[str] | None = None,
    hidden_column: str = "",
    gold: str = "",
) -> ImportBatch:
    """Record an import; an uploaded file is copied into the data directory.

    `fileobj` is an upload (copied so a worker can read it later); `path` is
    a file on this machine, read where it lies.

    `label_meaning` says what the label column is: another system's
    predictions (proposals by the agent ``import:<label_agent>``, or ``import``)
    or labels people verified (reviews by `user`, who must lead the project).
    `keep_columns` names the other columns kept as metadata (None: all);
    `hidden_column` is stored apart and never shown to reviewers. `gold` puts
    the file's examples into the draft gold set as candidates, or (attested)
    straight into a new frozen version with the file's labels.
    """
    fmt = fmt or corpus.guess_format(file_name)
    formats = corpus.formats_for(project.task)
    if fmt == "conll" and fmt not in formats:
        raise ServiceError("CoNLL files hold extraction spans; this project's answers are labels.")
    if fmt not in formats:
        raise ServiceError(f"Cannot tell the format of {file_name!r}; choose one of: {', '.join(formats)}.")
    label_column, hidden_column = label_column.strip(), hidden_column.strip()
    text_column, id_column = text_column.strip() or "text", id_column.strip()
    spans = project.task.file_answers == "spans"
    if spans:
        _check_span_file_options(
            fmt=fmt,
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
            hidden_column=hidden_column,
            keep_columns=keep_columns,
        )
    options = _import_label_options(
        project=project,
        user=user,
        label_column=label_column,
        label_meaning=label_meaning,
        label_agent=label_agent,
        gold=gold,
        span_file=spans and fmt in corpus.SPAN_FORMATS,
    )
    if hidden_column and hidden_column in {text_column, label_column, id_column}:
        raise ServiceError(f"The hidden column {hidden_column!r} is already the text, label or id column.")
    if fmt == "txt" and (hidden_column or label_column or keep_columns):
        raise ServiceError("A TXT file has no columns; use CSV, TSV or JSONL for labels and other columns.")
    digest = hashlib.sha256()
    if fileobj is not None:
        upload_dir = Path(settings.UPLOAD_DIR)
        upload_dir.mkdir(parents=True, exist_ok=True)
        target = upload_dir / f"{uuid.uuid4().hex}.{fmt}"
        with open(target, "wb") as out:
            while chunk := fileobj.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
    elif path is not None:
        target = Path(path).resolve()
        with open(target, "rb") as source:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
    else:
        raise ServiceError("No file given.")
    return ImportBatch.objects.create(
        project=project,
        file_name=Path(file_name).name[:255],
        file_path=str(target),
        format=fmt,
        sha256=digest.hexdigest(),
        size_bytes=target.stat().st_size,
        options={
            "text_column": text_column,
            "label_column": label_column,
            "id_column": id_column,
            "create_labels": create_labels,
            "keep_columns": [c.strip() for c in keep_columns if c.strip()]
            if keep_columns is not None
            else None,
            "hidden_column": hidden_column,
            **options,
        },
        created_by=user,
    )


def _check_span_file_options(
    *,
    fmt: str,
    text_column: str,
    label_column: str,
    id_column: str,
    hidden_column: str,
    keep_columns: list[str] | None,
) -> None:
    """A span task's file carries its answers itself: JSONL spans or fields, or CoNLL tags."""
    if label_column:
        raise ServiceError(
            "An extraction file carries its answers as spans or a fields object (JSONL) or as BIO "
            "tags (CoNLL), not in a label column; leave the label column empty."
        )
    if fmt == "conll" and (hidden_column or keep_columns or text_column != "text"):
        raise ServiceError("A CoNLL file has only tokens and tags; it has no columns to choose.")
    if fmt == "jsonl" and text_column != "text":
        raise ServiceError('An extraction JSONL file holds its text in "text" (its spans point into it).')
    if fmt == "jsonl" and id_column not in ("", "id"):
        raise ServiceError('An extraction JSONL file holds its ids in "id".')


def _import_label_options(
    *,
    project: Project,
    user,
    label_column: str,
    label_meaning: str,
    label_agent: str,
    gold: str,
    span_file: bool = False,
) -> dict:
    """What the file's labels mean and where its examples go, checked before anything is read.

    A span file (`span_file`) carries its answers as a label column would.
    """
    if label_meaning not in (importing.LABELS_PREDICTIONS, importing.LABELS_VERIFIED):
        raise ServiceError(f"Unknown label meaning {label_meaning!r}; use predictions or verified.")
    if gold not in ("", importing.GOLD_CANDIDATES, importing.GOLD_ATTESTED):
        raise ServiceError(f"Unknown gold choice {gold!r}; use candidates or attested.")
    label_column = label_column or ("spans" if span_file else "")
    if gold == importing.GOLD_ATTESTED:
        if not label_column:
            raise ServiceError(
                "An attested gold file of an extraction project is JSONL with spans or fields, or CoNLL."
                if project.task.file_answers == "spans"
                else "An attested gold file needs its label column."
            )
        label_meaning = importing.LABELS_VERIFIED
    if gold == importing.GOLD_CANDIDATES and label_column and label_meaning == importing.LABELS_VERIFIED:
        raise ServiceError(
            "Gold candidates are labelled blind by two reviewers, so their labels cannot be verified "
            "already; attest the file as a gold version instead, or import the labels as predictions."
        )
    if (label_column and label_meaning == importing.LABELS_VERIFIED) or gold == importing.GOLD_ATTESTED:
        # Verified labels are reviews in someone's name, and only a lead may vouch for them.
        if user is None or project.role_of(user) != Membership.Role.LEAD:
            raise ServiceError("Only a lead of the project can import labels as verified (name the user).")
    agent = IMPORT_AGENT
    name = label_agent.strip()
    if name:
        if len(name) > 100 or not all(c.isalnum() or c in "-_.@ " for c in name):
            raise ServiceError(
                "The predicting system's name takes letters, digits, spaces and - _ . @ (at most 100)."
            )
        agent = f"{IMPORT_AGENT}:{name}"
    meaning = label_meaning if label_column else ""
    return {
        "label_meaning": meaning,
        "label_agent": agent if meaning == importing.LABELS_PREDICTIONS else "",
        "gold": gold,
    }


def import_batch_start(*, batch: ImportBatch, inline: bool | None = None) -> ImportBatch:
    """Run a batch now (small files) or queue it on the "default" queue."""
    if inline is None:
        inline = batch.size_bytes <= settings.IMPORT_INLINE_MAX_BYTES
    if inline:
        if import_batch_claim(batch.pk):
            import_batch_run(batch=batch)
        batch.refresh_from_db()
        return batch

    def forget_upload() -> None:
        # Nothing will read the uploaded copy now: do not leave it in the data directory.
        if batch.file_path:
            Path(batch.file_path).unlink(missing_ok=True)

    rows.enqueue(ImportBatch, batch.pk, note="; nothing was imported", on_failed=forget_upload)
    # Outside a transaction the enqueue (or its failure) has happened already: the caller
    # must see a failed row as failed, not say "importing".
    batch.refresh_from_db()
    return batch


# --- export -------------------------------------------------------------------------

EXPORT_SCOPES = ("all", "reviewed", "gold")


def examples_for_export(
    *, project: Project, scope: str = "all", gold_version: int | None = None
) -> tuple[QuerySet, GoldSet | None]:
    if scope not in EXPORT_SCOPES:
        raise ServiceError(f"Unknown export scope {scope!r}; use one of {', '.join(EXPORT_SCOPES)}.")
    examples = Example.objects.for_project(project).with_current_label()
    gold_set = None
    if scope == "gold":
        gold_set = project.gold_sets.frozen_version(gold_version)
        if gold_set is None:
            which = f"version {gold_version}" if gold_version is not None else "version"
            raise ServiceError(f"This project has no frozen gold set {which}.")
        examples = examples.filter(gold_items__gold_set=gold_set)
    elif scope == "reviewed":
        drafting = GoldSetItem.objects.filter(gold_set__project=project, gold_set__frozen_at__isnull=True)
        examples = examples.exclude(label_state__in=["proposed", "unlabelled"]).exclude(
            pk__in=drafting.values("example_id")
        )
    examples = examples.prefetch_related(
        Prefetch("proposals", queryset=Proposal.objects.order_by("created_at", "pk")),
        Prefetch(
            "reviews",
            queryset=Review.objects.select_related("reviewer").order_by("created_at", "pk"),
        ),
        Prefetch("gold_items", queryset=GoldSetItem.objects.select_related("gold_set")),
    ).order_by("pk")
    return examples, gold_set


def export_records(examples: QuerySet, *, gold_set: GoldSet | None = None) -> Iterator[dict]:
    """One plain dict per example: current label plus its provenance.

    An item of a gold set still being labelled shows no answer at all (no label,
    proposals or reviews): another reviewer's blind label, an adjudication or the
    teacher's proposal would anchor whoever reads the export and break the
    blind double labelling. Its provenance is exported once the version is frozen.
    """
    for example in examples.iterator(chunk_size=2000):
        in_draft = any(not i.gold_set.is_frozen for i in example.gold_items.all())
        proposals = [] if in_draft else list(example.proposals.all())
        reviews = [] if in_draft else list(example.reviews.all())
        valid = [p for p in proposals if p.is_valid]
        latest = valid[-1] if valid else None
        gold_items = [i for i in example.gold_items.all() if i.gold_set.is_frozen]
        label = None if in_draft else example.current_label
        if gold_set is not None:
            label = next((i.label for i in gold_items if i.gold_set_id == gold_set.pk), label)
        state = "gold" if gold_set is not None else "gold_draft" if in_draft else example.label_state
        yield {
            "example_id": example.pk,
            "id": example.external_id,
            "text": example.text,
            "label": label,
            "label_state": state,
            "source": example.source,
            "is_gold": example.is_gold or bool(gold_items),
            "gold_versions": sorted(i.gold_set.version for i in gold_items),
            "metadata": example.metadata,
            "provenance": {
                "latest_proposal": _proposal_record(latest) if latest else None,
                "proposals": [_proposal_record(p) for p in proposals],
                "reviews": [
                    {
                        "reviewer": r.reviewer.get_username(),
                        "kind": r.kind,
                        "verdict": r.verdict,
                        "value": r.value,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in reviews
                ],
                "gold": [{"version": i.gold_set.version, "label": i.label} for i in gold_items],
            },
        }


def _proposal_record(p: Proposal) -> dict:
    return {
        "agent": p.agent,
        "value": p.value,
        "confidence": p.confidence,
        "error": p.error,
        # A plain decimal ("0", "0.000123"), never Decimal's "0E-8".
        "cost_usd": format(p.cost_usd.normalize(), "f"),
        "created_at": p.created_at.isoformat(),
    }


def project_counts(project: Project) -> dict[str, int]:
    """Examples by label state, in one grouped query, plus the gold count."""
    examples = Example.objects.for_project(project)
    states = dict.fromkeys(["unlabelled", "proposed", "reviewed", "rejected"], 0)
    grouped = examples.with_current_label().values("label_state").order_by()
    for row in grouped.annotate(n=Count("pk")):
        states[row["label_state"]] = row["n"]
    return {"examples": sum(states.values()), **states, "gold": examples.filter(is_gold=True).count()}


def project_dashboard(project: Project) -> dict:
    """Review throughput, agreement, label distributions and how often the teacher is right."""
    import statistics

    from annotation import review

    reviews = Review.objects.filter(example__project=project, kind=Review.Kind.REVIEW, is_bulk=False)
    throughput = []
    per_reviewer: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for name, seconds in reviews.values_list("reviewer__username", "seconds_spent"):
        counts[name] = counts.get(name, 0) + 1
        if seconds is not None and 0 < seconds < 600:  # longer is a coffee break, not work
            per_reviewer.setdefault(name, []).append(seconds)
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        times = per_reviewer.get(name, [])
        median = statistics.median(times) if times else None
        throughput.append(
            {
                "reviewer": name,
                "items": count,
                "median_seconds": median,
                "items_per_hour": 3600 / statistics.mean(times) if times else None,
            }
        )
    verdicts = dict(
        reviews.filter(proposal__isnull=False).values_list("verdict").order_by().annotate(n=Count("pk"))
    )
    judged = verdicts.get(Review.Verdict.ACCEPT, 0) + verdicts.get(Review.Verdict.CORRECT, 0)
    examples = Example.objects.for_project(project).with_current_label()
    task = project.task

    def per_category(column: str) -> Counter:
        # Grouped in SQL by the whole answer, then counted per label (field) by the task:
        # a label answer is one category, a span answer counts each field it marks.
        found: Counter = Counter()
        for row in examples.values(column).order_by().annotate(n=Count("pk")):
            if row[column] is not None:
                for name, count in task.category_counts([row[column]]).items():
                    found[name] += count * row["n"]
        return found

    current, teacher = per_category("current_label"), per_category("proposed_value")
    labels = list(project.labels.values_list("name", flat=True))
    distribution = [
        {"label": name, "current": current.get(name, 0), "teacher": teacher.get(name, 0)} for name in labels
    ]
    peak = max([1] + [max(d["current"], d["teacher"]) for d in distribution])
    gold = review.gold_draft(project) or project.gold_sets.frozen_version()
    return {
        "throughput": throughput,
        "teacher_accepted": verdicts.get(Review.Verdict.ACCEPT, 0),
        "teacher_corrected": verdicts.get(Review.Verdict.CORRECT, 0),
        "teacher_accuracy": verdicts.get(Review.Verdict.ACCEPT, 0) / judged if judged else None,
        "distribution": distribution,
        "distribution_peak": peak,
        "gold": gold,
        "agreement": review.gold_status(gold)["agreement"] if gold else None,
    }
