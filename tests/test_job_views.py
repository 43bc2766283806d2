"""One pair of cancel and resume views serves every kind of job in distillapp.jobs.JOBS.

Each kind: the lead cancels it (if its kind can be cancelled) and resumes it, back on the
page that shows it; anonymous users sign in first, outsiders get 404, reviewers 403, GET 405.
A kind added to JOBS fails here until MAKE says how to make a row of it.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotation import teacher
from annotation.models import ImportBatch, LabelingJob, QualityRun, SimilarityIndex, SyntheticJob
from distillapp.jobs import JOBS, job_type
from distillapp.models import BackgroundJob
from training.models import EvaluationJob, ExportJob, RoundRefresh, TrainingRun

pytestmark = pytest.mark.django_db


def _run(project):
    return TrainingRun.objects.get_or_create(project=project, number=1, defaults={"status": "succeeded"})[0]


# "app_label.Model" -> a row of that kind in the project, with these fields.
MAKE = {
    "annotation.ImportBatch": lambda p, **f: ImportBatch.objects.create(
        project=p, file_name="x.csv", format="csv", **f
    ),
    "annotation.LabelingJob": lambda p, **f: LabelingJob.objects.create(
        project=p, teacher={}, prompt_version=teacher.prompt_version_current(p, user=None), **f
    ),
    "annotation.SyntheticJob": lambda p, **f: SyntheticJob.objects.create(project=p, **f),
    "annotation.QualityRun": lambda p, **f: QualityRun.objects.create(project=p, **f),
    "annotation.SimilarityIndex": lambda p, **f: SimilarityIndex.objects.create(project=p, **f),
    "training.TrainingRun": lambda p, **f: TrainingRun.objects.create(project=p, number=7, **f),
    "training.EvaluationJob": lambda p, **f: EvaluationJob.objects.create(project=p, run=_run(p), **f),
    "training.ExportJob": lambda p, **f: ExportJob.objects.create(project=p, run=_run(p), **f),
    "training.RoundRefresh": lambda p, **f: RoundRefresh.objects.create(project=p, verdicts=10, **f),
}


def test_every_kind_can_be_made_here():
    assert set(MAKE) == set(JOBS)


def _url(action: str, job) -> str:
    return reverse(f"annotation:job-{action}", args=[job.project.slug, job.job_kind, job.pk])


def _resumable(label: str) -> str:
    # A failed import's file is gone: only a pending (or interrupted) one is queued again.
    return "pending" if label == "annotation.ImportBatch" else "failed"


@pytest.mark.parametrize("label", sorted(JOBS))
def test_the_lead_cancels_and_resumes_every_kind(
    label, project, lead_client, queues, django_capture_on_commit_callbacks
):
    job = MAKE[label](project, status=_resumable(label))
    model = type(job)
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_client.post(_url("resume", job))
    assert response.status_code == 302 and response["Location"] == job.page_url()
    job.refresh_from_db()
    assert job.status == "pending"
    assert [j.args for j in queues[job_type(model).queue].jobs] == [(job.pk,)]

    cancel = lead_client.post(_url("cancel", job))
    job.refresh_from_db()
    if issubclass(model, BackgroundJob):
        assert cancel.status_code == 302 and cancel["Location"] == job.page_url()
        assert job.status == "cancelled"
        again = lead_client.post(_url("resume", job), follow=True)
        assert "nothing to resume" in again.content.decode()
    else:
        assert cancel.status_code == 404 and job.status == "pending"


@pytest.mark.parametrize("label", sorted(JOBS))
def test_only_the_projects_leads_may_cancel_or_resume(
    label, project, django_user_model, reviewer_client, outsider_client, lead_client, queues
):
    job = MAKE[label](project, status=_resumable(label))
    actions = ["resume", "cancel"] if isinstance(job, BackgroundJob) else ["resume"]
    for action in actions:
        url = _url(action, job)
        anonymous = Client().post(url)
        assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
        assert outsider_client.post(url).status_code == 404
        assert reviewer_client.post(url).status_code == 403
        assert lead_client.get(url).status_code == 405
    job.refresh_from_db()
    assert job.status == _resumable(label)  # nobody but the lead changed it
    assert all(q.count == 0 for q in queues.values())


def test_an_unknown_kind_is_not_found(project, lead_client):
    url = reverse("annotation:job-resume", args=[project.slug, "membership", 1])
    assert lead_client.post(url).status_code == 404


def test_one_progress_bar_serves_every_kind():
    """Filled to the kind's percent where it can tell, moving where it cannot, gone once ended."""
    from django.template.loader import render_to_string

    from annotation.models import ImportBatch
    from training.models import EvaluationJob, TrainingRun

    def bar(job) -> str:
        return render_to_string("annotation/_job_progress.html", {"job": job, "label": "Working"}).strip()

    steps = TrainingRun(status=TrainingRun.Status.RUNNING, step=30, total_steps=120)
    assert 'max="100" value="25"' in bar(steps) and 'data-job-progress="trainingrun"' in bar(steps)
    loading = TrainingRun(status=TrainingRun.Status.RUNNING, step=0, total_steps=0)
    assert "<progress" in bar(loading) and "value=" not in bar(loading)  # moving: no steps known yet
    evaluation = EvaluationJob(status=EvaluationJob.Status.PENDING)
    assert "<progress" in bar(evaluation) and "value=" not in bar(evaluation)
    importing = ImportBatch(status=ImportBatch.Status.RUNNING, size_bytes=1000, bytes_done=400)
    assert f'value="{importing.percent_done}"' in bar(importing)
    assert bar(TrainingRun(status=TrainingRun.Status.SUCCEEDED)) == ""
