"""Teacher settings, labelling jobs and synthetic examples."""

from __future__ import annotations

import os

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from annotation import teacher
from annotation.forms import (
    LabelingForm,
    PromptForm,
    SyntheticForm,
    TeacherConfigForm,
)
from annotation.models import (
    LabelingJob,
    TeacherConfig,
)
from annotation.views._common import (
    form_errors,
    project_for_lead,
    rate_limited,
)

# --- teacher ----------------------------------------------------------------------------------


@login_required
def teacher_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    config = teacher.teacher_config_for(project)
    prompt = teacher.prompt_version_current(project, user=request.user)
    task = prompt.task
    config_form = TeacherConfigForm(request.POST or None, instance=config, prefix="teacher")
    prompt_form = PromptForm(
        request.POST or None,
        prefix="prompt",
        task=task,
        example_line=teacher.reviewed_example_line(project),
        initial={
            "instructions": prompt.instructions,
            "few_shot": prompt.few_shot,
            "few_shot_k": prompt.few_shot_k,
            "few_shot_per_label": prompt.few_shot_per_label,
            "fixed_examples": "\n".join(
                teacher.fixed_example_line(task, e["text"], e["label"]) for e in prompt.fixed_examples
            ),
        },
    )
    if request.method == "POST" and config_form.is_valid() and prompt_form.is_valid():
        try:
            with transaction.atomic():
                config_form.save()
                data = prompt_form.cleaned_data
                saved = teacher.prompt_version_update(
                    project=project,
                    user=request.user,
                    instructions=data["instructions"],
                    few_shot=data["few_shot"],
                    few_shot_k=data["few_shot_k"],
                    few_shot_per_label=data["few_shot_per_label"],
                    fixed_examples=data["fixed_examples"],
                )
        except teacher.LabelingError as exc:
            messages.error(request, str(exc))
        else:
            note = " (a new prompt version, since the last one has answers)" if saved.pk != prompt.pk else ""
            messages.success(request, f"Teacher saved; prompt v{saved.version}{note}.")
            return redirect("annotation:teacher-settings", slug=project.slug)
    system_prompt = teacher.render_system_prompt(
        instructions=prompt.instructions, guidelines=prompt.guidelines, task=task
    )
    refused = config_form.is_bound and not config_form.is_valid()
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
            "key_status": _key_status(config),
            "synthetic_form": SyntheticForm(project=project),
            "estimate": None
            if refused
            else teacher.labeling_estimate(
                project=project, selection=LabelingJob.Selection.UNLABELLED, config=config
            ),
            "estimate_errors": form_errors(config_form) if refused else None,
            "task": task,
            # How the latest labelling job's located values were placed (Task.answer_notes).
            "answer_notes": project.labeling_jobs.order_by("-pk")
            .values_list("answer_notes", flat=True)
            .first(),
        },
    )


@login_required
@require_POST
def teacher_estimate(request: HttpRequest, slug: str) -> HttpResponse:
    """What labelling the unlabelled examples would cost with the settings as typed, unsaved
    (the settings form asks on every change), or why those settings are refused."""
    project = project_for_lead(request, slug)
    config = teacher.teacher_config_for(project)
    form = TeacherConfigForm(request.POST, instance=config, prefix="teacher")
    estimate = None
    if form.is_valid():  # the form's instance now holds the typed values; it is never saved
        estimate = teacher.labeling_estimate(
            project=project, selection=LabelingJob.Selection.UNLABELLED, config=form.instance
        )
    return render(
        request,
        "annotation/teacher_settings.html#estimate",
        {
            "project": project,
            "estimate": estimate,
            "estimate_errors": None if estimate else form_errors(form),
        },
    )


def _key_status(config: TeacherConfig) -> str:
    """ "set", "unset" or "not allowed"; only an allow-listed variable is ever looked up,
    so the page cannot be used to probe the server's environment."""
    if teacher.credentials_problem(api_key_env=config.api_key_env, base_url=""):
        return "not allowed"
    return "set" if os.environ.get(config.api_key_env) else "unset"


@login_required
@require_POST
def labeling_estimate(request: HttpRequest, slug: str) -> HttpResponse:
    """Show what a labelling run will cost before the lead confirms it."""
    project = project_for_lead(request, slug)
    form = LabelingForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        estimate = teacher.labeling_estimate(
            project=project,
            selection=data["selection"],
            sample_size=data["sample_size"],
            search=data["search"],
        )
    except teacher.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    if data["provider"] == TeacherConfig.Provider.EMBEDDING:
        model = project.task.offline_teacher_name or "offline"
        estimate.update(provider="embedding", model=model, cost_usd="0")
    return render(
        request,
        "annotation/labeling_confirm.html",
        {"project": project, "is_lead": True, "estimate": estimate, "form": form, "data": data},
    )


@login_required
@require_POST
@rate_limited("teacher")
def labeling_job_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = LabelingForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("annotation:project-detail", slug=project.slug)
    data = form.cleaned_data
    try:
        job = teacher.labeling_job_create(
            project=project,
            user=request.user,
            selection=data["selection"],
            sample_size=data["sample_size"],
            search=data["search"],
            provider=data["provider"] or None,
        )
    except teacher.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:project-detail", slug=project.slug)
    teacher.labeling_job_start(job=job)
    messages.info(
        request, f"Labelling {job.estimate.get('examples', 0):,} examples; progress is shown below."
    )
    return redirect("annotation:project-detail", slug=project.slug)


@login_required
@require_POST
@rate_limited("teacher")
def synthetic_start(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = SyntheticForm(request.POST, project=project)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("annotation:teacher-settings", slug=project.slug)
    data = form.cleaned_data
    try:
        job = teacher.synthetic_job_create(
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
    except teacher.LabelingError as exc:
        messages.error(request, str(exc))
        return redirect("annotation:teacher-settings", slug=project.slug)
    teacher.synthetic_job_start(job=job)
    messages.info(request, f"Writing {job.requested:,} synthetic examples; progress is shown below.")
    return redirect("annotation:project-detail", slug=project.slug)
