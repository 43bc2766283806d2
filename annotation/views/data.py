"""Corpus import and export."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import corpus, projects
from annotation.forms import (
    ExportForm,
    ImportForm,
)
from annotation.models import (
    ImportBatch,
    Membership,
)
from annotation.views._common import (
    _form_errors,
    _project_for_lead,
    _project_for_member,
    rate_limited,
)

# --- import and export ------------------------------------------------------------------


@login_required
@require_POST
@rate_limited("import")
def import_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = ImportForm(request.POST, request.FILES, project=project)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        batch = corpus.import_batch_create(
            project=project,
            user=request.user,
            file_name=data["file"].name,
            fileobj=data["file"],
            fmt=data["format"] or None,
            text_column=data["text_column"],
            label_column=data.get("label_column") or "",
            id_column=data["id_column"],
            create_labels=data["create_labels"],
            label_meaning=data["label_meaning"] or "predictions",
            label_agent=data["label_agent"],
            keep_columns=data["keep_columns"],
            hidden_column=data["hidden_column"],
            gold=data["gold"],
        )
    except projects.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    batch = corpus.import_batch_start(batch=batch)
    if batch.status == ImportBatch.Status.SUCCEEDED:
        messages.success(
            request,
            f"Imported {batch.rows_created:,} new examples from {batch.file_name}"
            f" ({batch.rows_duplicate:,} duplicates skipped){_gold_note(batch)}.",
        )
        if batch.options.get("gold"):
            return redirect("annotation:gold", slug=project.slug)
    elif batch.status == ImportBatch.Status.FAILED:
        messages.error(request, f"{batch.file_name} was not imported: {batch.error}")
        return redirect("annotation:import-batch", slug=project.slug, pk=batch.pk)
    else:
        messages.info(request, f"Importing {batch.file_name} in the background; progress is shown below.")
    return redirect("annotation:project-detail", slug=project.slug)


def _gold_note(batch: ImportBatch) -> str:
    options = batch.options
    if options.get("gold") == "attested":
        return (
            f"; gold v{options['gold_version']} is frozen with its {options['gold_items']:,} attested labels"
        )
    if options.get("gold") == "candidates":
        return (
            f"; {options['gold_items']:,} are gold candidates in v{options['gold_version']}, to label blind"
        )
    return ""


@login_required
@require_POST
@rate_limited("import")
def import_resume(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Queue an interrupted import again; the job takes it up from scratch."""
    project = _project_for_lead(request, slug)
    batch = get_object_or_404(ImportBatch, project=project, pk=pk)
    if batch.status == ImportBatch.Status.PENDING or batch.is_stale:
        corpus.import_batch_start(batch=batch, inline=False)
        messages.info(request, f"{batch.file_name} is queued again.")
    else:
        messages.error(request, f"{batch.file_name} is not interrupted; nothing to resume.")
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_GET
def import_batch(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    batch = get_object_or_404(ImportBatch, project=project, pk=pk)
    return render(
        request,
        "annotation/import_batch.html",
        {"project": project, "batch": batch, "is_lead": role == Membership.Role.LEAD},
    )


@login_required
@require_GET
def project_export(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    form = ExportForm(request.GET, project=project)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    fmt, scope = form.cleaned_data["format"], form.cleaned_data["scope"]
    try:
        examples, gold_set = corpus.examples_for_export(
            project=project, scope=scope, gold_version=form.cleaned_data["gold"]
        )
    except projects.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    records = corpus.export_records(examples, gold_set=gold_set)
    # Streamed row by row, so a big project's export neither times out nor
    # fills the server's memory.
    chunks = corpus.iter_export(records, fmt=fmt, task=project.task)
    content_type = corpus.EXPORT_CONTENT_TYPES[fmt]
    response = StreamingHttpResponse(chunks, content_type=f"{content_type}; charset=utf-8")
    suffix = f"gold-v{gold_set.version}" if gold_set else scope
    name = f"{project.slug}-{suffix}-{dt.date.today():%Y%m%d}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    if gold_set is None:  # says what it left out, as the form and the command do
        response["X-Distill-Gold-Left-Out"] = str(corpus.gold_left_out(project))
    return response
