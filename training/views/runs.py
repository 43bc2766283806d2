"""Training runs: the launch form, run pages (progress, cancel, resume, download) and evaluation jobs."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from annotation.views._common import (
    form_errors,
    project_for_lead,
    project_for_member,
    rate_limited,
    render_polled,
)
from distillapp import jobs
from training import services
from training.forms import EvaluateForm, LaunchForm
from training.models import EvaluationJob, TrainingRun


def run_or_404(project, number: int) -> TrainingRun:
    return get_object_or_404(TrainingRun, project=project, number=number)


@login_required
@require_GET
def runs(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    refreshes = list(project.round_refreshes.select_related("run")[:5])
    jobs.recover_shown(refreshes)  # a refresh whose worker died is queued again
    advice = services.label_source_advice(project)
    task = project.task
    estimate = services.training_estimate(
        project=project,
        label_source=TrainingRun.LabelSource.ALL_CURRENT,
        teacher_min_confidence=0.0,
        include_synthetic=False,
        epochs=services.run_defaults(task)["epochs"],
    )
    # How long each kind of run would take on this data with its defaults, from earlier runs of
    # the same kind here (or a rough guess that says so).
    training_rows = services.training_set(project=project) if estimate["examples"] else []
    times = {}
    for kind in task.student_kinds:
        if kind != TrainingRun.Kind.ENSEMBLE and training_rows:
            hp = services.run_defaults(task, kind)
            times[kind] = services.time_estimate(
                project=project,
                rows=training_rows,
                kind=kind,
                base_model="",
                epochs=hp["epochs"],
                max_length=hp.get("max_length"),
            )
    return render(
        request,
        "training/runs.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "runs": project.training_runs.order_by("-number"),
            "form": LaunchForm(project=project, advice=advice, times=times),
            "advice": advice,
            "estimate": estimate,
            "evaluations": project.evaluations.select_related("gold_set", "run")[:20],
            "refreshes": refreshes,
        },
    )


@login_required
@require_POST
@rate_limited("training")
def run_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = LaunchForm(request.POST, project=project)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("training:runs", slug=project.slug)
    data = form.cleaned_data
    try:
        run = services.run_create(
            project=project,
            user=request.user,
            base_model=data["base_model"],
            hyperparameters=form.hyperparameters(),
            label_source=data["label_source"],
            teacher_min_confidence=data["teacher_min_confidence"],
            include_synthetic=data["include_synthetic"],
            kind=data["kind"],
            members=[run_or_404(project, number) for number in form.member_numbers()],
        )
    except services.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("training:runs", slug=project.slug)
    services.run_start(run=run)
    messages.info(request, f"Run {run.number} is queued: {run.counts['estimate']['examples']:,} examples.")
    return redirect("training:run", slug=project.slug, number=run.number)


def _run_context(request, project, role, run) -> dict:
    return {
        "project": project,
        "is_lead": role == "lead",
        "run": run,
        "settings": LaunchForm.described(run.kind, run.hyperparameters),
        "evaluate_form": EvaluateForm(task=project.task),
        "evaluations": run.evaluations.select_related("gold_set"),
        "evaluation_job": run.evaluation_jobs.first(),
    }


@login_required
@require_GET
def run_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    project, role = project_for_member(request, slug)
    run = run_or_404(project, number)
    # A run or an evaluation whose worker died is queued again as the page polls.
    jobs.recover_shown([run, *run.evaluation_jobs.all()[:1]])
    context = _run_context(request, project, role, run)
    if request.htmx:
        return render_polled(request, "training/run.html#progress", context, ended=run.is_finished)
    return render(request, "training/run.html", context)


@login_required
@require_POST
@rate_limited("training")
def run_evaluate(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    run = run_or_404(project, number)
    form = EvaluateForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("training:run", slug=project.slug, number=run.number)
    # Scoring a big gold set takes minutes: a worker does it, the run page shows how it goes
    # and opens the evaluation when it is done (evaluation_job below).
    if run.evaluation_jobs.unfinished().exists():
        messages.info(request, f"Run {run.number} is already being evaluated.")
    else:
        services.evaluation_job_start(
            run=run,
            user=request.user,
            gold_version=form.cleaned_data["gold"],
            target_accuracy=form.cleaned_data["target_accuracy"],
        )
    return redirect("training:run", slug=project.slug, number=run.number)


@login_required
@require_GET
def evaluation_job(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The run page's evaluation status (htmx polls it); when done, the evaluation itself."""
    project, role = project_for_member(request, slug)
    job = get_object_or_404(EvaluationJob.objects.select_related("run"), project=project, pk=pk)
    jobs.recover_shown([job])
    if job.status == EvaluationJob.Status.SUCCEEDED and job.result_id:
        done = reverse("training:evaluation", args=[project.slug, job.result_id])
        return HttpResponseClientRedirect(done) if request.htmx else redirect(done)
    if not request.htmx:
        return redirect("training:run", slug=project.slug, number=job.run.number)
    context = {"project": project, "is_lead": role == "lead", "run": job.run, "evaluation_job": job}
    return render_polled(request, "training/run.html#evaluating", context, ended=job.is_finished)


@login_required
@require_GET
def run_download(request: HttpRequest, slug: str, number: int) -> FileResponse:
    project, _ = project_for_member(request, slug)
    run = run_or_404(project, number)
    if not run.artifact_path or not Path(run.artifact_path).is_dir():
        raise Http404("This run has no artifacts.")
    # Built once beside the artifacts (they never change after the run) and streamed
    # from disk: a zip of a few hundred MB must not be assembled in the request's memory.
    root = Path(run.artifact_path)
    archive_path = root.with_name(root.name + ".zip")
    if not archive_path.exists():
        partial = archive_path.with_name(f"{archive_path.name}.{os.getpid()}.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file() and "checkpoints" not in path.parts:
                    archive.write(path, path.relative_to(root))
        partial.replace(archive_path)
    return FileResponse(
        archive_path.open("rb"), as_attachment=True, filename=f"{project.slug}-run-{run.number}.zip"
    )
