"""Corpus import and export."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

from django.conf import settings
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
    form_errors,
    project_for_lead,
    project_for_member,
    rate_limited,
)

# --- import and export ------------------------------------------------------------------


@login_required
@require_POST
@rate_limited("import")
def import_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    held = held_import(request, project)
    held_file = held.get("file")
    form = ImportForm(
        request.POST, request.FILES, project=project, held_name=held_file["name"] if held_file else ""
    )
    if not form.is_valid():
        messages.error(request, form_errors(form) + _kept(request, project, form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    upload = data["file"]
    try:
        with open(_held_path(held_file["id"]), "rb") if upload is None else nullcontext(upload) as fileobj:
            batch = corpus.import_batch_create(
                project=project,
                user=request.user,
                file_name=upload.name if upload is not None else held_file["name"],
                fileobj=fileobj,
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
        messages.error(request, str(exc) + _kept(request, project, form))
        return redirect("annotation:project-detail", slug=project.slug)
    batch = corpus.import_batch_start(batch=batch)
    if batch.status == ImportBatch.Status.FAILED:
        messages.error(
            request, f"{batch.file_name} was not imported: {batch.error}" + _kept(request, project, form)
        )
        return redirect("annotation:import-batch", slug=project.slug, pk=batch.pk)
    _forget_held(request, project)
    if batch.status == ImportBatch.Status.SUCCEEDED:
        messages.success(
            request,
            f"Imported {batch.rows_created:,} new examples from {batch.file_name}"
            f" ({batch.rows_duplicate:,} duplicates skipped){_gold_note(batch)}.",
        )
        if batch.options.get("gold"):
            return redirect("annotation:gold", slug=project.slug)
    else:
        messages.info(request, f"Importing {batch.file_name} in the background; progress is shown below.")
    return redirect("annotation:project-detail", slug=project.slug)


# --- a failed import's settings and file, kept for the next try ------------------------
# A browser cannot refill a file input, so the upload of a failed try is kept on the server
# (under the data directory, named in the user's session) and the form offers it again.

HELD_MAX_AGE_SECONDS = 24 * 3600


def _held_key(project) -> str:
    return f"import-retry:{project.pk}"


def _held_path(file_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", file_id):
        raise ValueError("not a held file's id")
    return Path(settings.UPLOAD_DIR) / "held" / file_id


def held_import(request: HttpRequest, project) -> dict:
    """This user's last failed import of the project: {"settings": form data, "file": {"id",
    "name", "size"} or None}; {} when there is none."""
    held = request.session.get(_held_key(project)) or {}
    file = held.get("file")
    if file and not _held_path(file["id"]).exists():  # pruned since
        held = {**held, "file": None}
    return held


def _kept(request: HttpRequest, project, form: ImportForm) -> str:
    """Keep the form's settings, and its upload (or the one kept before), for the next try;
    the words the error message ends with."""
    previous = held_import(request, project).get("file")
    upload = request.FILES.get("file")
    file = previous
    if upload is not None and upload.size <= settings.IMPORT_MAX_UPLOAD_BYTES:
        folder = _held_path("0" * 32).parent
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():  # tries nobody came back to
            if old.stat().st_mtime < time.time() - HELD_MAX_AGE_SECONDS:
                old.unlink(missing_ok=True)
        file = {"id": uuid.uuid4().hex, "name": Path(upload.name).name[:255], "size": upload.size}
        with open(_held_path(file["id"]), "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        if previous:
            _held_path(previous["id"]).unlink(missing_ok=True)
    fields = {name: form.data.get(name) for name in form.fields if name != "file" and name in form.data}
    request.session[_held_key(project)] = {"settings": fields, "file": file}
    if file:
        return f" Your settings and the file “{file['name']}” are kept in the import form: change them and import again."
    return " Your settings are kept in the import form; choose the file again (a browser cannot keep it)."


def _forget_held(request: HttpRequest, project) -> None:
    held = request.session.pop(_held_key(project), None) or {}
    if held.get("file"):
        _held_path(held["file"]["id"]).unlink(missing_ok=True)


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
@require_GET
def import_batch(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project, role = project_for_member(request, slug)
    batch = get_object_or_404(ImportBatch, project=project, pk=pk)
    return render(
        request,
        "annotation/import_batch.html",
        {"project": project, "batch": batch, "is_lead": role == Membership.Role.LEAD},
    )


@login_required
@require_GET
def project_export(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    form = ExportForm(request.GET, project=project)
    if not form.is_valid():
        messages.error(request, form_errors(form))
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
