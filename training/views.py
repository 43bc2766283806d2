from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from annotation.models import Example
from annotation.views._common import HTMX_STOP_POLLING, _form_errors, _project_for_lead, _project_for_member
from distillapp import rows
from tasks import measure as metrics_lib
from training import services, serving
from training.forms import EvaluateForm, LaunchForm, PromoteForm, ServingConfigForm, TokenForm
from training.models import ApiToken, Evaluation, EvaluationJob, ExportJob, ModelVersion, TrainingRun


def _run(project, number: int) -> TrainingRun:
    return get_object_or_404(TrainingRun, project=project, number=number)


@login_required
@require_GET
def runs(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    advice = services.label_source_advice(project)
    estimate = services.training_estimate(
        project=project, label_source="all", teacher_min_confidence=0.0, include_synthetic=False, epochs=4
    )
    return render(
        request,
        "training/runs.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "runs": project.training_runs.order_by("-number"),
            "form": LaunchForm(project=project, advice=advice),
            "advice": advice,
            "estimate": estimate,
            "evaluations": project.evaluations.select_related("gold_set", "run")[:20],
        },
    )


@login_required
@require_POST
def run_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = LaunchForm(request.POST, project=project)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
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
            members=[_run(project, number) for number in form.member_numbers()],
        )
    except services.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("training:runs", slug=project.slug)
    services.run_start(run=run)
    messages.info(request, f"Run {run.number} is queued: {run.counts['estimate']['examples']:,} examples.")
    return redirect("training:run", slug=project.slug, number=run.number)


def _loss_chart(run: TrainingRun, width: int = 600, height: int = 160) -> dict | None:
    """The loss curve's SVG coordinates, with value ticks on both axes (None before two points)."""
    history = run.loss_history or []
    if len(history) < 2:
        return None
    steps = [s for s, _ in history]
    losses = [loss for _, loss in history]
    low = min(0.0, min(losses))
    loss_step = serving.nice_step((max(losses) - low) or 1.0, ticks=4)
    top = low + math.ceil((max(losses) - low) / loss_step - 1e-9) * loss_step
    span_x = max(1, run.total_steps or steps[-1])
    step_step = max(1, math.ceil(serving.nice_step(span_x, ticks=5)))

    def y(loss: float) -> float:
        return round(height - (loss - low) / ((top - low) or 1.0) * height, 1)

    return {
        "points": " ".join(f"{s / span_x * width:.1f},{y(loss)}" for s, loss in history),
        "width": width,
        "height": height,
        "mid_y": height / 2,
        "y_ticks": [
            {"y": y(low + i * loss_step), "label": f"{low + i * loss_step:g}"}
            for i in range(round((top - low) / loss_step) + 1)
        ],
        "x_ticks": [
            {"x": round(s / span_x * width, 1), "label": f"{s:,}"} for s in range(0, span_x + 1, step_step)
        ],
    }


def _run_context(request, project, role, run) -> dict:
    return {
        "project": project,
        "is_lead": role == "lead",
        "run": run,
        "loss_chart": _loss_chart(run),
        "evaluate_form": EvaluateForm(task=project.task),
        "evaluations": run.evaluations.select_related("gold_set"),
        "evaluation_job": run.evaluation_jobs.first(),
    }


@login_required
@require_GET
def run_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    run = _run(project, number)
    # A run or an evaluation whose worker died is queued again as the page polls.
    rows.recover_shown([run, *run.evaluation_jobs.all()[:1]])
    context = _run_context(request, project, role, run)
    if request.htmx:
        response = render(request, "training/run.html#progress", context)
        if run.is_finished:
            response.status_code = HTMX_STOP_POLLING
        return response
    return render(request, "training/run.html", context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    run = _run(project, number)
    if run.is_finished:
        messages.error(request, "This run has already ended.")
    else:
        services.run_cancel(run=run)
        messages.info(request, "Cancelling after the current step.")
    return redirect("training:run", slug=project.slug, number=run.number)


@login_required
@require_POST
def run_resume(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    """Queue a failed or interrupted run again; it trains from the start."""
    project = _project_for_lead(request, slug)
    run = _run(project, number)
    if run.can_resume and rows.resume(TrainingRun, run.pk):
        messages.info(request, f"Run {run.number} is queued again.")
    else:
        messages.error(request, "This run is not interrupted; nothing to resume.")
    return redirect("training:run", slug=project.slug, number=run.number)


@login_required
@require_POST
def run_evaluate(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    run = _run(project, number)
    form = EvaluateForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("training:run", slug=project.slug, number=run.number)
    # Scoring a big gold set takes minutes: a worker does it, the run page shows how it goes
    # and opens the evaluation when it is done (evaluation_job below).
    if run.evaluation_jobs.filter(
        status__in=[EvaluationJob.Status.PENDING, EvaluationJob.Status.RUNNING]
    ).exists():
        messages.info(request, f"Run {run.number} is already being evaluated.")
    else:
        services.evaluation_job_start(
            run=run,
            user=request.user,
            gold_version=form.cleaned_data["gold"],
            target_accuracy=form.cleaned_data["target_accuracy"],
        )
    return redirect("training:run", slug=project.slug, number=run.number)


def _evaluation_job(project, pk: int) -> EvaluationJob:
    return get_object_or_404(EvaluationJob.objects.select_related("run"), project=project, pk=pk)


@login_required
@require_GET
def evaluation_job(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The run page's evaluation status (htmx polls it); when done, the evaluation itself."""
    project, role = _project_for_member(request, slug)
    job = _evaluation_job(project, pk)
    rows.recover_shown([job])
    if job.status == EvaluationJob.Status.SUCCEEDED and job.result_id:
        done = reverse("training:evaluation", args=[project.slug, job.result_id])
        return HttpResponseClientRedirect(done) if request.htmx else redirect(done)
    if not request.htmx:
        return redirect("training:run", slug=project.slug, number=job.run.number)
    context = {"project": project, "is_lead": role == "lead", "run": job.run, "evaluation_job": job}
    response = render(request, "training/run.html#evaluating", context)
    if job.is_finished:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_POST
def evaluation_job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    job = _evaluation_job(project, pk)
    if job.is_finished:
        messages.error(request, "This evaluation has already ended.")
    else:
        rows.cancel(EvaluationJob, job.pk)
        messages.info(request, "Cancelling the evaluation: nothing it measured is kept.")
    return redirect("training:run", slug=project.slug, number=job.run.number)


@login_required
@require_POST
def evaluation_job_resume(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Queue a failed or interrupted evaluation again; it measures from the start."""
    project = _project_for_lead(request, slug)
    job = _evaluation_job(project, pk)
    if job.can_resume and rows.resume(EvaluationJob, job.pk):
        messages.info(request, f"The evaluation of run {job.run.number} is queued again.")
    else:
        messages.error(request, "This evaluation is not interrupted; nothing to resume.")
    return redirect("training:run", slug=project.slug, number=job.run.number)


@login_required
@require_GET
def run_download(request: HttpRequest, slug: str, number: int) -> FileResponse:
    project, _ = _project_for_member(request, slug)
    run = _run(project, number)
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


def _heat(value: int, peak: int) -> str:
    return f"{0.08 + 0.85 * value / peak:.2f}" if value and peak else "0"


# Column names longer than this are shortened in a crowded confusion matrix, where they
# stand on end (the column's title keeps the full name); row names wrap instead.
HEAT_NAME_CHARS = 22


def _heat_size(labels: int) -> str:
    """How roomy the confusion matrix can be: big wrapped names for a few labels, compact for many."""
    return "few" if labels <= 8 else "some" if labels <= 20 else "many"


def _short(name: str, size: str) -> str:
    if size == "few" or len(name) <= HEAT_NAME_CHARS:
        return name
    return name[: HEAT_NAME_CHARS - 1].rstrip() + "…"


@login_required
@require_GET
def evaluation(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    student = get_object_or_404(Evaluation, project=project, pk=pk)
    teacher = services.latest_teacher_evaluation(student) if student.subject == "student" else None
    overlap = services.error_analysis(student, teacher) if teacher else {}
    # Only an evaluation stored before intervals lacks them; the macro-F1 bootstrap that
    # fills them in is over labels (per_class), so span answers are never handed to it.
    m = metrics_lib.with_intervals(
        student.metrics, student.predictions if "per_class" in student.metrics else None
    )
    choice = metrics_lib.threshold_choice(
        m.get("coverage", []), student.target_accuracy, examples=m.get("examples") or 0
    )
    confusion = m.get("confusion", {"labels": [], "matrix": []})
    names, matrix = confusion["labels"], confusion["matrix"]
    size = _heat_size(len(names))
    # Rows sorted by how many of the row's examples are wrong, worst first.
    order = sorted(range(len(names)), key=lambda i: -(sum(matrix[i]) - matrix[i][i]) if matrix else 0)
    off_peak = max([v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j] + [1])
    diag_peak = max([matrix[i][i] for i in range(len(matrix))] + [1])
    heat_rows = [
        {
            "label": names[i],
            "total": sum(matrix[i]),
            "cells": [
                {
                    "value": matrix[i][j],
                    "predicted": names[j],
                    "alpha": _heat(matrix[i][j], diag_peak if i == j else off_peak),
                    "is_diagonal": i == j,
                }
                for j in order
            ],
        }
        for i in order
    ]
    task = project.task
    texts = dict(
        Example.objects.filter(pk__in=[r["example"] for r in student.predictions]).values_list("pk", "text")
    )
    return render(
        request,
        "training/evaluation.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "task": task,
            "task_context": task.evaluation_context(m, student.predictions, texts),
            "evaluation": student,
            "m": m,
            "choice": choice,
            "teacher": teacher,
            "systems": services.latest_system_evaluations(student) if student.subject == "student" else [],
            "overlap": {k: len(v) for k, v in overlap.items()},
            "heat_labels": [{"name": names[j], "short": _short(names[j], size)} for j in order],
            "heat_rows": heat_rows,
            "heat_size": size,
        },
    )


OVERLAP_CELLS = {
    "both_right": "Both right",
    "only_student_wrong": "Only the student is wrong",
    "only_teacher_wrong": "Only the teacher is wrong",
    "both_wrong": "Both wrong",
}


@login_required
@require_GET
def evaluation_examples(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The examples behind one overlap cell or one confusion (true -> predicted)."""
    project, role = _project_for_member(request, slug)
    student = get_object_or_404(Evaluation, project=project, pk=pk)
    rows = {r["example"]: r for r in student.predictions}
    cell = request.GET.get("cell", "")
    if cell:
        if cell not in OVERLAP_CELLS:
            raise Http404("Unknown cell.")
        teacher = services.latest_teacher_evaluation(student)
        ids = services.error_analysis(student, teacher).get(cell, [])
        title = OVERLAP_CELLS[cell]
        teacher_rows = {r["example"]: r for r in teacher.predictions} if teacher else {}
    else:
        true, predicted = request.GET.get("true", ""), request.GET.get("predicted", "")
        ids = [i for i, r in rows.items() if r["gold"] == true and (r["predicted"] or "(none)") == predicted]
        title = f"Gold “{true}”, predicted “{predicted}”"
        teacher_rows = {}
    texts = dict(Example.objects.filter(pk__in=ids).values_list("pk", "text"))
    task = project.task

    def shown(row: dict | None, text: str) -> dict | None:
        # An answer as one line: a label, or an extraction's "field: value · ..." from its text.
        if row is None:
            return None
        return {
            **row,
            "gold": task.summary(row["gold"], text=text),
            "predicted": task.summary(row["predicted"], text=text) if row["predicted"] is not None else None,
        }

    items = [
        {
            "id": i,
            "text": texts.get(i, ""),
            "row": shown(rows.get(i), texts.get(i, "")),
            "teacher": shown(teacher_rows.get(i), texts.get(i, "")),
        }
        for i in ids
    ]
    return render(
        request,
        "training/evaluation_examples.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "evaluation": student,
            "title": title,
            "items": items,
        },
    )


@login_required
@require_GET
def compare(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    numbers = [int(n) for n in request.GET.getlist("run") if n.isdigit()]
    chosen = (
        list(project.training_runs.filter(number__in=numbers).order_by("number"))
        if numbers
        else list(project.training_runs.filter(status="succeeded").order_by("-number")[:3])[::-1]
    )
    return render(
        request,
        "training/compare.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "comparison": services.compare_runs(chosen),
            "all_runs": project.training_runs.order_by("-number"),
        },
    )


# --- deployment, monitoring, cost --------------------------------------------------------------


@login_required
def deploy(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    is_lead = role == "lead"
    config = serving.serving_config_for(project)
    if request.method == "POST" and not is_lead:
        raise PermissionDenied("Only the project's leads can change serving.")
    if request.method == "POST" and "quantize" in request.POST:
        return _quantize(request, project)
    config_form = ServingConfigForm(request.POST or None, instance=config)
    if request.method == "POST":
        if config_form.is_valid():
            config_form.save()
            messages.success(request, "Serving settings saved.")
            return redirect("training:deploy", slug=project.slug)
    finished = project.training_runs.filter(status="succeeded").order_by("-number")
    deploy_rows = [_deploy_row(r, config) for r in finished]
    rows.recover_shown([r["export"] for r in deploy_rows if r["export"]])  # an export whose worker died
    return render(
        request,
        "training/deploy.html",
        {
            "project": project,
            "is_lead": is_lead,
            "active": serving.active_version(project),
            "versions": project.model_versions.select_related("run", "promoted_by")[:20],
            "events": project.deployment_events.select_related("version__run", "user")[:20],
            "runs": deploy_rows,
            "runtimes": ModelVersion.Runtime.choices,
            "serving_cache_seconds": settings.SERVING_CACHE_SECONDS,
            "tokens": project.api_tokens.all(),
            "promote_form": PromoteForm(),
            "token_form": TokenForm(),
            "config_form": config_form,
            "new_token": request.session.pop(f"new-token:{project.pk}", None),
        },
    )


def _deploy_row(run: TrainingRun, config) -> dict:
    """One run in the deploy page's table: its threshold, int8 measurement and latest export job."""
    return {
        "run": run,
        "choice": serving.threshold_recommendation(run, config.target_accuracy),
        "int8": serving.onnx_measurement(run),
        "export": run.export_jobs.first(),
    }


def _quantize(request: HttpRequest, project) -> HttpResponse:
    """The deploy page's "Quantize (int8)" button: a worker exports the run and measures it on
    gold (minutes for a big model); the page shows the measurement when it is done."""
    number = request.POST["quantize"]
    run = _run(project, int(number)) if number.isdigit() else None
    if run is None:
        raise Http404("No such run.")
    if run.export_jobs.filter(status__in=[ExportJob.Status.PENDING, ExportJob.Status.RUNNING]).exists():
        messages.info(request, f"Run {run.number} is already being quantized.")
    else:
        serving.export_job_start(run=run, user=request.user)
    return redirect("training:deploy", slug=project.slug)


def _export_job(project, pk: int) -> ExportJob:
    return get_object_or_404(ExportJob.objects.select_related("run"), project=project, pk=pk)


@login_required
@require_GET
def export_job(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The deploy page's int8 cell of the job's run (htmx polls it until the job ends)."""
    project, role = _project_for_member(request, slug)
    job = _export_job(project, pk)
    rows.recover_shown([job])
    if not request.htmx:
        return redirect("training:deploy", slug=project.slug)
    context = {
        "project": project,
        "is_lead": role == "lead",
        "r": _deploy_row(job.run, serving.serving_config_for(project)),
    }
    response = render(request, "training/deploy.html#int8", context)
    if job.is_finished:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_POST
def export_job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    job = _export_job(project, pk)
    if job.is_finished:
        messages.error(request, "This int8 export has already ended.")
    else:
        rows.cancel(ExportJob, job.pk)
        messages.info(request, "Cancelling the int8 export after its current stage.")
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def export_job_resume(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Queue a failed or interrupted int8 export again; it exports and measures from the start."""
    project = _project_for_lead(request, slug)
    job = _export_job(project, pk)
    if job.can_resume and rows.resume(ExportJob, job.pk):
        messages.info(request, f"The int8 export of run {job.run.number} is queued again.")
    else:
        messages.error(request, "This int8 export is not interrupted; nothing to resume.")
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def promote(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = PromoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("training:deploy", slug=project.slug)
    run = _run(project, form.cleaned_data["run"])
    try:
        version = serving.version_promote(
            run=run,
            user=request.user,
            threshold=form.cleaned_data["threshold"],
            runtime=request.POST.get("runtime") or ModelVersion.Runtime.TORCH,
        )
        messages.success(
            request,
            f"Run {run.number} is live at threshold {version.threshold:.2f} on {version.get_runtime_display()}.",
        )
    except serving.ServingError as exc:
        messages.error(request, str(exc))
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    try:
        version = serving.version_rollback(project=project, user=request.user)
        messages.success(request, f"Rolled back: run {version.run.number} is live again.")
    except serving.ServingError as exc:
        messages.error(request, str(exc))
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def token_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = TokenForm(request.POST)
    name = form.cleaned_data["name"] if form.is_valid() else "token"
    _, raw = serving.token_create(project=project, user=request.user, name=name)
    # Shown once, on the next page; only its hash is kept.
    request.session[f"new-token:{project.pk}"] = raw
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def token_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = _project_for_lead(request, slug)
    token = get_object_or_404(ApiToken, project=project, pk=pk)
    serving.token_revoke(token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked.")
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_GET
def monitor(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    data = serving.monitoring(project)
    peak = max([1] + [row["n"] for row in data["per_day"]])
    hist_peak = max([1] + data["confidence_histogram"])
    return render(
        request,
        "training/monitor.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "m": data,
            "day_peak": peak,
            "hist_peak": hist_peak,
            "active": serving.active_version(project),
        },
    )


@login_required
@require_GET
def review_value(request: HttpRequest, slug: str) -> HttpResponse:
    """Where review pays: the learning curve, errors found per order, review time and cost."""
    from training.services.review_value import curve_chart
    from training.services.review_value import review_value as measure

    project, role = _project_for_member(request, slug)
    value = measure(project)
    return render(
        request,
        "training/review_value.html",
        {"project": project, "is_lead": role == "lead", "value": value, "chart": curve_chart(value["curve"])},
    )


@login_required
@require_GET
def cost(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    return render(
        request,
        "training/cost.html",
        {"project": project, "is_lead": role == "lead", "report": serving.cost_report(project)},
    )
