"""Cancel and resume: one pair of views for every job kind in distillapp.jobs.JOBS."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from annotation.views._common import project_for_lead, rate_limit_refusal
from distillapp import jobs
from distillapp.models import BackgroundJob

# Resuming queues the work again: it counts against the limit of what fills that queue.
RESUME_LIMIT_BY_QUEUE = {"llm": "teacher", "default": "import", "training": "training", "short": "training"}


def _job_model(kind: str):
    """The job model a URL's kind names (its model name); 404 for anything else."""
    for model in jobs.job_models():
        if model._meta.model_name == kind:
            return model
    raise Http404("No such kind of job.")


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, kind: str, pk: int) -> HttpResponse:
    model = _job_model(kind)
    if not issubclass(model, BackgroundJob):
        raise Http404("This kind of job cannot be cancelled.")
    project = project_for_lead(request, slug)
    job = get_object_or_404(model, project=project, pk=pk)
    if job.is_finished:
        messages.error(request, f"This {job.noun} has already ended.")
    else:
        jobs.cancel(model, job.pk)
        messages.info(request, job.cancel_note)
    return redirect(job.page_url())


@login_required
@require_POST
def job_resume(request: HttpRequest, slug: str, kind: str, pk: int) -> HttpResponse:
    """Queue a failed or interrupted job again (how much it redoes, its JOBS entry says)."""
    model = _job_model(kind)
    refused = rate_limit_refusal(request, RESUME_LIMIT_BY_QUEUE[jobs.job_type(model).queue])
    if refused:
        return refused
    project = project_for_lead(request, slug)
    job = get_object_or_404(model, project=project, pk=pk)
    if job.can_resume and jobs.resume(model, job.pk):
        messages.info(request, f"{job.job_title} is queued again{job.resume_note}.")
    else:
        messages.error(request, f"This {job.noun} is not interrupted; nothing to resume.")
    return redirect(job.page_url())
