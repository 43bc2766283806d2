"""Deployment: promote, rollback, the int8 export jobs, API tokens, monitoring, review value and cost."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.views._common import (
    form_errors,
    project_for_lead,
    project_for_member,
    rate_limit_refusal,
    render_polled,
)
from distillapp import jobs
from training import serving
from training.forms import PromoteForm, ServingConfigForm, TokenForm
from training.models import ApiToken, ExportJob, ModelVersion, TrainingRun
from training.views.runs import run_or_404


@login_required
def deploy(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    is_lead = role == "lead"
    config = serving.serving_config_for(project)
    if request.method == "POST" and not is_lead:
        raise PermissionDenied("Only the project's leads can change serving.")
    if request.method == "POST" and "quantize" in request.POST:
        return _quantize(request, project)
    config_form = ServingConfigForm(request.POST or None, instance=config, task=project.task)
    if request.method == "POST":
        if config_form.is_valid():
            config_form.save()
            messages.success(request, "Serving settings saved.")
            return redirect("training:deploy", slug=project.slug)
    finished = project.training_runs.filter(status="succeeded").order_by("-number")
    active = serving.active_version(project)
    # Each run beside the teacher and the live version, with what promoting it must confirm.
    deploy_rows = [
        {**_deploy_row(r, config), "check": serving.promotion_check(r, active=active)} for r in finished
    ]
    jobs.recover_shown([r["export"] for r in deploy_rows if r["export"]])  # an export whose worker died
    return render(
        request,
        "training/deploy.html",
        {
            "project": project,
            "is_lead": is_lead,
            "active": active,
            "versions": project.model_versions.select_related("run", "promoted_by")[:20],
            "events": project.deployment_events.select_related("version__run", "user")[:20],
            "runs": deploy_rows,
            "runtimes": ModelVersion.Runtime.choices,
            "serving_cache_seconds": settings.SERVING_CACHE_SECONDS,
            "tokens": project.api_tokens.all(),
            "token_form": TokenForm(),
            "config_form": config_form,
            "budget": serving.fallback_budget_status(project, config),
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
    refused = rate_limit_refusal(request, "training")
    if refused:
        return refused
    number = request.POST["quantize"]
    run = run_or_404(project, int(number)) if number.isdigit() else None
    if run is None:
        raise Http404("No such run.")
    if run.export_jobs.unfinished().exists():
        messages.info(request, f"Run {run.number} is already being quantized.")
    else:
        serving.export_job_start(run=run, user=request.user)
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_GET
def export_job(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The deploy page's int8 cell of the job's run (htmx polls it until the job ends)."""
    project, role = project_for_member(request, slug)
    job = get_object_or_404(ExportJob.objects.select_related("run"), project=project, pk=pk)
    jobs.recover_shown([job])
    if not request.htmx:
        return redirect("training:deploy", slug=project.slug)
    context = {
        "project": project,
        "is_lead": role == "lead",
        "r": _deploy_row(job.run, serving.serving_config_for(project)),
    }
    return render_polled(request, "training/deploy.html#int8", context, ended=job.is_finished)


@login_required
@require_POST
def promote(request: HttpRequest, slug: str) -> HttpResponse:
    """Promote the run chosen in the deploy page's list at the threshold in its row. A run
    worse than the teacher or the live version, or not measured on the latest gold set, is
    promoted only once the lead has read why and confirmed (the reasons stay on the version)."""
    project = project_for_lead(request, slug)
    number = request.POST.get("run", "")
    threshold = request.POST.get(f"threshold-{number}", request.POST.get("threshold", ""))
    form = PromoteForm({"run": number, "threshold": threshold})
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("training:deploy", slug=project.slug)
    run = project.training_runs.filter(
        number=form.cleaned_data["run"], status=TrainingRun.Status.SUCCEEDED
    ).first()
    if run is None:
        messages.error(request, f"There is no finished run {form.cleaned_data['run']} to promote.")
        return redirect("training:deploy", slug=project.slug)
    runtime = request.POST.get("runtime") or ModelVersion.Runtime.TORCH
    check = serving.promotion_check(run)
    if check["warnings"] and request.POST.get("confirm") != "1":
        context = {
            "project": project,
            "is_lead": True,
            "check": check,
            "threshold": threshold,
            "runtime": runtime,
            "runtime_name": dict(ModelVersion.Runtime.choices).get(runtime, runtime),
        }
        return render(request, "training/promote_confirm.html", context)
    note = " ".join(check["warnings"])
    try:
        version = serving.version_promote(
            run=run,
            user=request.user,
            threshold=form.cleaned_data["threshold"],
            runtime=runtime,
            note=note if len(note) <= 300 else note[:299] + "…",
        )
        messages.success(
            request,
            f"Run {run.number} is live at threshold {version.threshold_text} on {version.get_runtime_display()}.",
        )
    except serving.ServingError as exc:
        messages.error(request, str(exc))
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    try:
        version = serving.version_rollback(project=project, user=request.user)
        messages.success(request, f"Rolled back: run {version.run.number} is live again.")
    except serving.ServingError as exc:
        messages.error(request, str(exc))
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def token_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = TokenForm(request.POST)
    name = form.cleaned_data["name"] if form.is_valid() else "token"
    _, raw = serving.token_create(project=project, user=request.user, name=name)
    # Shown once, on the next page; only its hash is kept.
    request.session[f"new-token:{project.pk}"] = raw
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_POST
def token_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    token = get_object_or_404(ApiToken, project=project, pk=pk)
    serving.token_revoke(token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) is revoked.")
    return redirect("training:deploy", slug=project.slug)


@login_required
@require_GET
def monitor(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
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
            "budget": serving.fallback_budget_status(project, serving.serving_config_for(project)),
        },
    )


@login_required
@require_GET
def review_value(request: HttpRequest, slug: str) -> HttpResponse:
    """Where review pays: the learning curve, errors found per order, review time and cost."""
    from training.services.review_value import review_value as measure

    project, role = project_for_member(request, slug)
    value = measure(project)
    return render(
        request,
        "training/review_value.html",
        {"project": project, "is_lead": role == "lead", "value": value},
    )


@login_required
@require_GET
def cost(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    return render(
        request,
        "training/cost.html",
        {"project": project, "is_lead": role == "lead", "report": serving.cost_report(project)},
    )
