from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import corpus, labeling, review, services, synthetic
from annotation import teacher as teacher_boundary
from annotation.forms import (
    ExportForm,
    ImportForm,
    LabelForm,
    LabelingForm,
    MembershipForm,
    ProjectForm,
    ProjectSettingsForm,
    PromptForm,
    SyntheticForm,
    TeacherConfigForm,
)
from annotation.models import (
    Example,
    GoldSet,
    ImportBatch,
    Label,
    LabelingJob,
    Membership,
    Project,
    ReviewClaim,
    SyntheticJob,
    TeacherConfig,
)

HTMX_STOP_POLLING = 286


def _project_for_member(request: HttpRequest, slug: str) -> tuple[Project, str]:
    """The project and the user's role; 404 for anyone outside it."""
    project = Project.objects.filter(slug=slug).first()
    role = project.role_of(request.user) if project else None
    if role is None:
        raise Http404("No such project.")
    return project, role


def _project_for_lead(request: HttpRequest, slug: str) -> Project:
    project, role = _project_for_member(request, slug)
    if role != Membership.Role.LEAD:
        raise PermissionDenied("Only the project's leads can do this.")
    return project


def _workers_online() -> int | None:
    try:
        import django_rq
        from rq import Worker

        return Worker.count(connection=django_rq.get_connection("default"))
    except Exception:
        return None


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    projects = Project.objects.for_user(request.user).order_by("name")
    return render(request, "annotation/project_list.html", {"projects": projects})


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = services.project_create(
            name=form.cleaned_data["name"],
            slug=form.cleaned_data["slug"],
            task_type=form.cleaned_data["task_type"],
            guidelines=form.cleaned_data["guidelines"],
            labels=form.cleaned_data["labels"],
            user=request.user,
        )
        messages.success(request, f"Project “{project.name}” created. Import some examples next.")
        return redirect("annotation:project-detail", slug=project.slug)
    return render(request, "annotation/project_create.html", {"form": form})


def _status_context(project: Project) -> dict:
    batches = list(project.import_batches.select_related("created_by")[:10])
    jobs = list(project.labeling_jobs.select_related("prompt_version", "created_by")[:5])
    synthetic_jobs = list(project.synthetic_jobs.all()[:5])
    is_busy = any(not x.is_finished for x in [*batches, *jobs, *synthetic_jobs])
    waiting = [b for b in batches if b.status == ImportBatch.Status.PENDING]
    return {
        "counts": services.project_counts(project),
        "batches": batches,
        "jobs": jobs,
        "synthetic_jobs": synthetic_jobs,
        "is_busy": is_busy,
        "workers_online": _workers_online() if waiting else None,
    }


@login_required
@require_GET
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    context = {
        "project": project,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        "labels": project.labels.all(),
        "import_form": ImportForm(),
        "export_form": ExportForm(),
        "labeling_form": LabelingForm(),
        "teacher": labeling.teacher_config_for(project),
        "gold_sets": project.gold_sets.filter(frozen_at__isnull=False),
        **_status_context(project),
    }
    return render(request, "annotation/project_detail.html", context)


@login_required
@require_GET
def project_status(request: HttpRequest, slug: str) -> HttpResponse:
    """The polled part of the project page: counts and import progress."""
    project, role = _project_for_member(request, slug)
    context = {
        "project": project,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        **_status_context(project),
    }
    response = render(request, "annotation/project_detail.html#status", context)
    if not context["is_busy"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
def project_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("annotation:project-detail", slug=project.slug)
    return render(
        request, "annotation/project_settings.html", {"project": project, "form": form, "is_lead": True}
    )


# --- labels ---------------------------------------------------------------------------


@login_required
@require_GET
def project_labels(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    return render(
        request,
        "annotation/project_labels.html",
        {
            "project": project,
            "is_lead": role == Membership.Role.LEAD,
            "labels": project.labels.all(),
            "form": LabelForm(),
        },
    )


def _act(request: HttpRequest, action: Callable[[], str], form: forms.Form | None = None) -> None:
    """Run a change and tell the user how it went, as a message on the next page."""
    if form is not None and not form.is_valid():
        messages.error(request, _form_errors(form))
        return
    try:
        messages.success(request, action())
    except services.ServiceError as exc:
        messages.error(request, str(exc))


@login_required
@require_POST
def label_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = LabelForm(request.POST)

    def create() -> str:
        data = form.cleaned_data
        label = services.label_create(
            project=project, name=data["name"], description=data["description"], key=data["key"]
        )
        return f"Label “{label.name}” added with key {label.key or '—'}."

    _act(request, create, form)
    return redirect("annotation:project-labels", slug=project.slug)


@login_required
@require_POST
def label_update(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    label = get_object_or_404(Label, project=project, pk=pk)
    form = LabelForm(request.POST)

    def update() -> str:
        data = form.cleaned_data
        services.label_update(
            label=label,
            name=data["name"],
            description=data["description"],
            key=data["key"],
            order=label.order if data["order"] is None else data["order"],
        )
        return f"Label “{label.name}” saved."

    _act(request, update, form)
    return redirect("annotation:project-labels", slug=project.slug)


@login_required
@require_POST
def label_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    label = get_object_or_404(Label, project=project, pk=pk)

    def delete() -> str:
        services.label_delete(label=label)
        return f"Label “{label.name}” deleted."

    _act(request, delete)
    return redirect("annotation:project-labels", slug=project.slug)


# --- members --------------------------------------------------------------------------


@login_required
@require_GET
def project_members(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    return render(
        request,
        "annotation/project_members.html",
        {
            "project": project,
            "is_lead": role == Membership.Role.LEAD,
            "memberships": project.memberships.select_related("user").order_by("role", "user__username"),
            "form": MembershipForm(),
        },
    )


@login_required
@require_POST
def membership_add(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = MembershipForm(request.POST)

    def add() -> str:
        membership = services.membership_set(
            project=project, username=form.cleaned_data["username"], role=form.cleaned_data["role"]
        )
        return f"{membership.user} is now a {membership.get_role_display().lower()}."

    _act(request, add, form)
    return redirect("annotation:project-members", slug=project.slug)


@login_required
@require_POST
def membership_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    membership = get_object_or_404(Membership, project=project, pk=pk)

    def remove() -> str:
        services.membership_remove(membership=membership)
        return f"{membership.user} was removed from the project."

    _act(request, remove)
    return redirect("annotation:project-members", slug=project.slug)


# --- import and export ------------------------------------------------------------------


@login_required
@require_POST
def import_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        batch = services.import_batch_create(
            project=project,
            user=request.user,
            file_name=data["file"].name,
            fileobj=data["file"],
            fmt=data["format"] or None,
            text_column=data["text_column"],
            label_column=data["label_column"],
            id_column=data["id_column"],
            create_labels=data["create_labels"],
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    batch = services.import_batch_start(batch=batch)
    if batch.status == ImportBatch.Status.SUCCEEDED:
        messages.success(
            request,
            f"Imported {batch.rows_created:,} new examples from {batch.file_name}"
            f" ({batch.rows_duplicate:,} duplicates skipped).",
        )
    elif batch.status == ImportBatch.Status.FAILED:
        messages.error(request, f"{batch.file_name} was not imported: {batch.error}")
        return redirect("annotation:import-batch", slug=project.slug, pk=batch.pk)
    else:
        messages.info(request, f"Importing {batch.file_name} in the background; progress is shown below.")
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_POST
def import_resume(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Queue an interrupted import again; the job takes it up from scratch."""
    project = _project_for_lead(request, slug)
    batch = get_object_or_404(ImportBatch, project=project, pk=pk)
    if batch.status == ImportBatch.Status.PENDING or batch.is_stale:
        services.import_batch_start(batch=batch, inline=False)
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
    form = ExportForm(request.GET)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    fmt, scope = form.cleaned_data["format"], form.cleaned_data["scope"]
    try:
        examples, gold_set = services.examples_for_export(
            project=project, scope=scope, gold_version=form.cleaned_data["gold"]
        )
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    records = services.export_records(examples, gold_set=gold_set)
    # Streamed row by row, so a big project's export neither times out nor
    # fills the server's memory.
    chunks = corpus.iter_csv(records) if fmt == "csv" else corpus.iter_jsonl(records)
    content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(chunks, content_type=f"{content_type}; charset=utf-8")
    suffix = f"gold-v{gold_set.version}" if gold_set else scope
    name = f"{project.slug}-{suffix}-{dt.date.today():%Y%m%d}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _form_errors(form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ") if field in form.fields else ""
        parts.append(f"{label.capitalize() + ': ' if label else ''}{' '.join(errors)}")
    return " ".join(parts)


# --- teacher ----------------------------------------------------------------------------------


@login_required
def teacher_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    config = labeling.teacher_config_for(project)
    prompt = labeling.prompt_version_current(project, user=request.user)
    config_form = TeacherConfigForm(request.POST or None, instance=config, prefix="teacher")
    prompt_form = PromptForm(
        request.POST or None,
        prefix="prompt",
        initial={
            "instructions": prompt.instructions,
            "few_shot": prompt.few_shot,
            "few_shot_k": prompt.few_shot_k,
            "few_shot_per_label": prompt.few_shot_per_label,
            "fixed_examples": "\n".join(f"{e['label']}: {e['text']}" for e in prompt.fixed_examples),
        },
    )
    if request.method == "POST" and config_form.is_valid() and prompt_form.is_valid():
        try:
            with transaction.atomic():
                config_form.save()
                data = prompt_form.cleaned_data
                saved = labeling.prompt_version_update(
                    project=project,
                    user=request.user,
                    instructions=data["instructions"],
                    few_shot=data["few_shot"],
                    few_shot_k=data["few_shot_k"],
                    few_shot_per_label=data["few_shot_per_label"],
                    fixed_examples=data["fixed_examples"],
                )
        except labeling.LabelingError as exc:
            messages.error(request, str(exc))
        else:
            note = " (a new prompt version, since the last one has answers)" if saved.pk != prompt.pk else ""
            messages.success(request, f"Teacher saved; prompt v{saved.version}{note}.")
            return redirect("annotation:teacher-settings", slug=project.slug)
    system_prompt = teacher_boundary.render_system_prompt(
        instructions=prompt.instructions, guidelines=prompt.guidelines, labels=prompt.labels
    )
    return render(
        request,
        "annotation/teacher_settings.html",
        {
            "project": project,
            "is_lead": True,
            "config_form": config_form,
            "prompt_form": prompt_form,
            "prompt": prompt,
            "system_prompt": system_prompt,
            "versions": project.prompt_versions.all()[:20],
            "key_is_set": bool(os.environ.get(config.api_key_env or "OPENAI_API_KEY")),
            "synthetic_form": SyntheticForm(project=project),
        },
    )


@login_required
@require_POST
def labeling_estimate(request: HttpRequest, slug: str) -> HttpResponse:
    """Show what a labelling run will cost before the lead confirms it."""
    project = _project_for_lead(request, slug)
    form = LabelingForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        estimate = labeling.labeling_estimate(
            project=project,
            selection=data["selection"],
            sample_size=data["sample_size"],
            search=data["search"],
        )
    except labeling.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    if data["provider"] == TeacherConfig.Provider.EMBEDDING:
        estimate.update(provider="embedding", model="embedding-minilm", cost_usd="0")
    return render(
        request,
        "annotation/labeling_confirm.html",
        {"project": project, "is_lead": True, "estimate": estimate, "form": form, "data": data},
    )


@login_required
@require_POST
def labeling_job_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = LabelingForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        job = labeling.labeling_job_create(
            project=project,
            user=request.user,
            selection=data["selection"],
            sample_size=data["sample_size"],
            search=data["search"],
            provider=data["provider"] or None,
        )
    except labeling.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    labeling.labeling_job_start(job=job)
    messages.info(
        request, f"Labelling {job.estimate.get('examples', 0):,} examples; progress is shown below."
    )
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_POST
def labeling_job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    job = get_object_or_404(LabelingJob, project=project, pk=pk)
    if job.is_finished:
        messages.error(request, "This labelling job has already ended.")
    else:
        labeling.labeling_job_cancel(job=job)
        messages.info(request, "Cancelling: answers already received are kept.")
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_POST
def synthetic_start(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = SyntheticForm(request.POST, project=project)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("annotation:teacher-settings", slug=project.slug)
    data = form.cleaned_data
    try:
        job = synthetic.synthetic_job_create(
            project=project,
            user=request.user,
            labels=data["labels"],
            per_label=data["per_label"],
            personas=data["personas"],
            tones=data["tones"],
            min_words=data["min_words"],
            max_words=data["max_words"],
            noise=data["noise"],
            difficulty=data["difficulty"],
            seed_with_real=data["seed_with_real"],
            near_duplicate_threshold=data["near_duplicate_threshold"],
        )
    except labeling.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:teacher-settings", slug=project.slug)
    synthetic.synthetic_job_start(job=job)
    messages.info(request, f"Writing {job.requested:,} synthetic examples; progress is shown below.")
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_POST
def synthetic_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    job = get_object_or_404(SyntheticJob, project=project, pk=pk)
    if job.is_finished:
        messages.error(request, "This job has already ended.")
    else:
        synthetic.synthetic_job_cancel(job=job)
        messages.info(request, "Cancelling: examples already written are kept.")
    return redirect("annotation:project-detail", slug=project.slug)


# --- review queue -------------------------------------------------------------------------------


def _queue_filter(request: HttpRequest, project: Project) -> review.QueueFilter:
    """The reviewer's queue settings: from the query string when given, else the session."""
    key = f"review:{project.pk}"
    saved = request.session.get(key, {})
    if "strategy" in request.GET:
        saved = {
            "strategy": request.GET.get("strategy")
            if request.GET.get("strategy") in review.STRATEGIES
            else "confidence",
            "label": request.GET.get("label", ""),
            "source": request.GET.get("source", ""),
            "min_confidence": _float_or_none(request.GET.get("min")),
            "max_confidence": _float_or_none(request.GET.get("max")),
            "search": request.GET.get("q", "").strip(),
        }
        request.session[key] = saved
        request.session[f"{key}:skipped"] = []
    return review.QueueFilter(**saved, skipped=request.session.get(f"{key}:skipped", []))


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _card_context(
    request: HttpRequest, project: Project, role: str, example: Example | None, filters
) -> dict:
    proposals = []
    student = None
    if example is not None:
        for proposal in example.proposals.order_by("-created_at", "-pk")[:10]:
            if proposal.agent.startswith("student:"):
                student = student or proposal
            else:
                proposals.append(proposal)
    teacher = next((p for p in proposals if p.is_valid), None)
    return {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "teacher": teacher,
        "proposals": proposals,
        "student": student,
        "labels": project.labels.all(),
        "filters": filters,
        "strategies": review.STRATEGIES,
        "strategy_name": review.STRATEGIES.get(filters.strategy, ""),
        "reviewed_today": review.reviewed_today(project=project, user=request.user),
        "remaining": review.queue(project, filters).count(),
        "sources": Example.Source.choices,
    }


def _render_card(request: HttpRequest, project: Project, role: str, filters, *, example=None) -> HttpResponse:
    if example is None:
        example = review.review_next(project=project, user=request.user, filters=filters)
    context = _card_context(request, project, role, example, filters)
    template = "annotation/review.html#card" if request.htmx else "annotation/review.html"
    return render(request, template, context)


@login_required
@require_GET
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_act(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    example = get_object_or_404(Example, project=project, pk=request.POST.get("example_id"), is_gold=False)
    try:
        review.review_record(
            example=example,
            user=request.user,
            verdict=request.POST.get("verdict", ""),
            label=request.POST.get("label"),
        )
    except review.ReviewError as exc:
        messages.error(request, str(exc))
        if request.htmx:
            return _render_card(request, project, role, _queue_filter(request, project), example=example)
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_skip(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    key = f"review:{project.pk}:skipped"
    skipped = request.session.get(key, [])
    example_id = request.POST.get("example_id", "")
    if example_id.isdigit():
        skipped = [*skipped, int(example_id)][-500:]
        request.session[key] = skipped
        ReviewClaim.objects.filter(example_id=int(example_id), user=request.user).delete()
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_undo(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    example = review.review_undo(project=project, user=request.user)
    if example is None:
        messages.info(request, "Nothing to undo.")
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project), example=example)


@login_required
def review_bulk(request: HttpRequest, slug: str) -> HttpResponse:
    """Accept every proposal in the current filter at or above a confidence, after a preview."""
    project = _project_for_lead(request, slug)
    filters = _queue_filter(request, project)
    threshold = _float_or_none(request.POST.get("threshold") or request.GET.get("threshold"))
    if threshold is None or not 0 <= threshold <= 1:
        threshold = 0.9
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        accepted = review.bulk_accept(
            project=project, user=request.user, filters=filters, threshold=threshold
        )
        messages.success(request, f"Accepted {accepted:,} proposals at confidence ≥ {threshold:.2f}.")
        return redirect("annotation:review", slug=project.slug)
    preview = review.bulk_accept_preview(project=project, filters=filters, threshold=threshold)
    return render(
        request,
        "annotation/review_bulk.html",
        {
            "project": project,
            "is_lead": True,
            "preview": preview,
            "filters": filters,
            "strategies": review.STRATEGIES,
        },
    )


# --- gold sets ---------------------------------------------------------------------------------------


@login_required
@require_GET
def gold(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    draft = review.gold_draft(project)
    frozen = project.gold_sets.filter(frozen_at__isnull=False).order_by("-version")
    frozen_status = [(g, review.gold_status(g)) for g in frozen[:5]]
    return render(
        request,
        "annotation/gold.html",
        {
            "project": project,
            "is_lead": role == Membership.Role.LEAD,
            "draft": draft,
            "status": review.gold_status(draft) if draft else None,
            "frozen": frozen_status,
            "real_examples": Example.objects.filter(project=project, is_gold=False)
            .exclude(source=Example.Source.SYNTHETIC)
            .count(),
        },
    )


@login_required
@require_POST
def gold_draw(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    size = request.POST.get("size", "")
    if not size.isdigit() or not 1 <= int(size) <= 100_000:
        messages.error(request, "Give the number of examples to draw (1 to 100,000).")
        return redirect("annotation:gold", slug=project.slug)
    draft = review.gold_draw(
        project=project, size=int(size), stratified=request.POST.get("stratified") == "on"
    )
    messages.success(
        request, f"Gold set v{draft.version} now has {draft.items.count():,} candidates to label blind."
    )
    return redirect("annotation:gold", slug=project.slug)


def _draft_or_404(project: Project) -> GoldSet:
    draft = review.gold_draft(project)
    if draft is None:
        raise Http404("No gold set is being labelled.")
    return draft


@login_required
def gold_label(request: HttpRequest, slug: str) -> HttpResponse:
    """Blind labelling: no teacher proposal, no other reviewer's label."""
    project, role = _project_for_member(request, slug)
    draft = _draft_or_404(project)
    if request.method == "POST":
        example = get_object_or_404(Example, project=project, pk=request.POST.get("example_id"))
        try:
            review.gold_label_blind(
                gold_set=draft, example=example, user=request.user, label=request.POST.get("label", "")
            )
        except review.ReviewError as exc:
            messages.error(request, str(exc))
        if not request.htmx:
            return redirect("annotation:gold-label", slug=project.slug)
    example = review.gold_next_blind(gold_set=draft, user=request.user)
    context = {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "labels": project.labels.all(),
        "gold_set": draft,
        "blind": True,
    }
    template = "annotation/gold_label.html#card" if request.htmx else "annotation/gold_label.html"
    return render(request, template, context)


@login_required
def gold_adjudicate(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    draft = _draft_or_404(project)
    if request.method == "POST":
        example = get_object_or_404(Example, project=project, pk=request.POST.get("example_id"))
        try:
            review.gold_adjudicate(
                gold_set=draft, example=example, user=request.user, label=request.POST.get("label", "")
            )
        except review.ReviewError as exc:
            messages.error(request, str(exc))
        if not request.htmx:
            return redirect("annotation:gold-adjudicate", slug=project.slug)
    row = review.gold_next_disagreement(draft)
    context = {
        "project": project,
        "is_lead": True,
        "row": row,
        "example": row["item"].example if row else None,
        "teacher": review.teacher_proposal(row["item"].example) if row else None,
        "labels": project.labels.all(),
        "gold_set": draft,
    }
    template = "annotation/gold_adjudicate.html#card" if request.htmx else "annotation/gold_adjudicate.html"
    return render(request, template, context)


@login_required
@require_POST
def gold_freeze(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    draft = _draft_or_404(project)
    try:
        review.gold_freeze(gold_set=draft, user=request.user)
        messages.success(request, f"Gold set v{draft.version} is frozen: it will never change.")
    except review.ReviewError as exc:
        messages.error(request, str(exc))
    return redirect("annotation:gold", slug=project.slug)
