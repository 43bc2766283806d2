"""Gold evaluation and the int8 export run as background jobs: the request only queues them.

The run page and the deploy page show how the job goes (htmx polls its row), then the
evaluation or the int8 measurement; a failed job shows its error and can be resumed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker

import distillapp.jobs
from annotation.models import Example, GoldSet, GoldSetItem, Proposal
from tests.training.conftest import make_run
from training import jobs, services, serving
from training.models import Evaluation, EvaluationJob, ExportJob

pytestmark = pytest.mark.django_db

TEXTS = [
    "I was charged twice for my subscription",
    "the app crashes when I log in",
    "where is your office?",
    "refund please",
    "error 500 on the export page, again and again and again",
]
GOLD = ["Billing", "Technical support", "Other", "Billing", "Technical support"]


def gold_project(project, lead) -> GoldSet:
    """Frozen gold v1 of five tickets, each with a teacher answer and an imported CRM answer."""
    gold = GoldSet.objects.create(project=project, version=1)
    for text, label in zip(TEXTS, GOLD, strict=True):
        example = Example.objects.create(project=project, text=text, is_gold=True)
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=label)
        Proposal.objects.create(example=example, agent="teacher:m:p1", value=label, confidence=0.9)
        Proposal.objects.create(example=example, agent="import:crm", value="Billing")
    gold.freeze(user=lead)
    return gold


@pytest.fixture
def run(project, tiny_classifier, tmp_path):
    """A finished run (the tiny untrained classifier) whose manifest says it saw no gold."""
    artifacts = shutil.copytree(tiny_classifier, tmp_path / "run")
    (artifacts / "manifest.json").write_text(json.dumps({"train": [], "validation": []}))
    return make_run(project, artifacts, evaluated=False)


def evaluate_url(project, run) -> str:
    return reverse("training:run-evaluate", args=[project.slug, run.number])


def test_evaluate_returns_at_once_with_a_pending_job(project, lead, run, lead_client, queues):
    gold_project(project, lead)
    response = lead_client.post(evaluate_url(project, run), {"target_accuracy": "0.9"})
    assert response.status_code == 302
    assert response["Location"] == reverse("training:run", args=[project.slug, run.number])
    job = EvaluationJob.objects.get()
    # Nothing is measured in the request: the job waits for a worker, on the version frozen now.
    assert (job.status, job.gold_version, job.target_accuracy, job.run) == ("pending", 1, 0.9, run)
    assert not Evaluation.objects.exists()

    page = lead_client.get(response["Location"]).content.decode()
    poll = reverse("training:evaluation-job", args=[project.slug, job.pk])
    assert f'hx-get="{poll}"' in page and 'data-evaluation-job="pending"' in page
    assert "Waiting for a worker to evaluate on gold v1" in page
    fragment = lead_client.get(poll, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and 'data-evaluation-job="pending"' in fragment.content.decode()
    # A second click while it waits does not queue a second evaluation.
    lead_client.post(evaluate_url(project, run), {"target_accuracy": "0.9"})
    assert EvaluationJob.objects.count() == 1

    # Cancelled while it waits: at once, and the page stops polling.
    lead_client.post(reverse("annotation:job-cancel", args=[project.slug, "evaluationjob", job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled" and job.finished_at
    stopped = lead_client.get(poll, headers={"HX-Request": "true"})
    assert stopped.status_code == 286 and 'data-evaluation-job="cancelled"' in stopped.content.decode()
    jobs.run_evaluation_job(job.pk)  # a worker that gets it later leaves it alone
    assert not Evaluation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_evaluates_student_teacher_and_imported_system(project, lead, run, lead_client, queues):
    gold = gold_project(project, lead)
    lead_client.post(evaluate_url(project, run), {"target_accuracy": "0.9"})
    job = EvaluationJob.objects.get()
    # Queued when the request's transaction committed, on the short lane (never behind a
    # fine-tune on "training"); the short queue's worker takes it.
    assert [(j.func_name, j.args) for j in queues["short"].jobs] == [
        ("training.jobs.run_evaluation_job", (job.pk,))
    ]
    assert not queues["training"].count
    SimpleWorker([queues["short"]], connection=queues["short"].connection).work(burst=True)

    job.refresh_from_db()
    assert (job.status, job.error, job.phase) == ("succeeded", "", "")
    assert job.started_at and job.finished_at and job.worker
    student = Evaluation.objects.get(subject="student")
    teacher = Evaluation.objects.get(subject="teacher")
    system = Evaluation.objects.get(subject="system")
    assert job.result == student and student.run == run and student.target_accuracy == 0.9
    assert {e.gold_set for e in (student, teacher, system)} == {gold}
    assert student.metrics["examples"] == 5
    assert (teacher.metrics["accuracy"], system.agent, system.metrics["accuracy"]) == (1.0, "import:crm", 0.4)

    # The page that polled it is sent to the evaluation; without htmx, the link goes there too.
    poll = reverse("training:evaluation-job", args=[project.slug, job.pk])
    done = reverse("training:evaluation", args=[project.slug, student.pk])
    assert lead_client.get(poll, headers={"HX-Request": "true"})["HX-Redirect"] == done
    assert lead_client.get(poll)["Location"] == done
    page = lead_client.get(done).content.decode()
    assert "Confusion matrix" in page and 'data-system="import:crm"' in page
    # A finished job is not polled any more.
    run_page = lead_client.get(reverse("training:run", args=[project.slug, run.number])).content.decode()
    assert poll not in run_page and done in run_page


def test_a_failed_evaluation_shows_its_error_and_can_be_resumed(
    project, lead, run, lead_client, queues, django_capture_on_commit_callbacks
):
    # No gold set is frozen yet: the job finds out and says so on its row.
    lead_client.post(evaluate_url(project, run), {"target_accuracy": "0.95"})
    job = EvaluationJob.objects.get()
    assert job.gold_version is None
    jobs.run_evaluation_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.finished_at and job.phase == ""
    assert job.error == "This project has no frozen gold set; freeze one first."
    assert not Evaluation.objects.exists()

    poll = reverse("training:evaluation-job", args=[project.slug, job.pk])
    fragment = lead_client.get(poll, headers={"HX-Request": "true"})
    assert fragment.status_code == 286
    html = fragment.content.decode()
    assert 'data-evaluation-job="failed"' in html and "no frozen gold set; freeze one first" in html
    resume = reverse("annotation:job-resume", args=[project.slug, "evaluationjob", job.pk])
    page = lead_client.get(reverse("training:run", args=[project.slug, run.number])).content.decode()
    assert resume in page

    # Gold is frozen, the lead resumes: queued again, and this time it succeeds.
    gold_project(project, lead)
    with django_capture_on_commit_callbacks(execute=True):
        lead_client.post(resume)
    job.refresh_from_db()
    assert (job.status, job.error) == ("pending", "")
    assert [j.args for j in queues["short"].jobs] == [(job.pk,)]
    jobs.run_evaluation_job(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result.gold_set.version == 1


def test_an_evaluation_cancelled_while_it_runs_saves_nothing(project, lead, run):
    gold_project(project, lead)
    job = EvaluationJob.objects.create(project=project, run=run, gold_version=1)
    assert distillapp.jobs.claim(EvaluationJob, job.pk)
    distillapp.jobs.cancel(EvaluationJob, job.pk)  # alive in this process: it is only asked to stop
    job.refresh_from_db()
    assert job.status == "running" and job.is_cancel_requested
    job = services.evaluation_job_run(job=job)
    assert job.status == "cancelled" and not Evaluation.objects.exists()


def test_an_evaluation_taken_over_from_a_dead_worker_saves_one_set(
    project, lead, run, queues, django_capture_on_commit_callbacks
):
    """The row is the truth: a re-run after a kill measures again and saves exactly once."""
    gold_project(project, lead)
    job = EvaluationJob.objects.create(project=project, run=run, gold_version=1)
    EvaluationJob.objects.filter(pk=job.pk).update(
        status="running",
        worker="gone-host:1",
        heartbeat_at=timezone.now() - dt.timedelta(hours=1),
        phase="evaluating the student",
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert distillapp.jobs.recover(EvaluationJob) == [job.pk]
    assert [(j.func_name, j.args) for j in queues["short"].jobs] == [
        ("training.jobs.run_evaluation_job", (job.pk,))
    ]
    jobs.run_evaluation_job(job.pk)
    jobs.run_evaluation_job(job.pk)  # queued twice (a page and a worker both recovered it): once
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert sorted(Evaluation.objects.values_list("subject", flat=True)) == ["student", "system", "teacher"]


def test_only_leads_evaluate_and_only_members_see_the_job(
    project, lead, run, lead_client, reviewer_client, outsider_client
):
    assert reviewer_client.post(evaluate_url(project, run), {"target_accuracy": "0.9"}).status_code == 403
    assert not EvaluationJob.objects.exists()
    job = EvaluationJob.objects.create(project=project, run=run, gold_version=1)
    poll = reverse("training:evaluation-job", args=[project.slug, job.pk])
    assert outsider_client.get(poll).status_code == 404
    assert reviewer_client.get(poll, headers={"HX-Request": "true"}).status_code == 200
    cancel = reverse("annotation:job-cancel", args=[project.slug, "evaluationjob", job.pk])
    assert reviewer_client.post(cancel).status_code == 403 and lead_client.get(cancel).status_code == 405
    job.refresh_from_db()
    assert job.status == "pending"


# --- the int8 export --------------------------------------------------------------------------


def deploy_url(project) -> str:
    return reverse("training:deploy", args=[project.slug])


def test_quantize_queues_an_export_whose_measurement_the_deploy_page_then_shows(
    project, lead, run, lead_client, queues
):
    gold_project(project, lead)
    Evaluation.objects.create(
        project=project, run=run, gold_set=GoldSet.objects.get(), subject="student", agent=run.agent
    )
    response = lead_client.post(deploy_url(project), {"quantize": run.number})
    assert response.status_code == 302
    job = ExportJob.objects.get()
    assert (job.status, job.gold_version, job.run) == ("pending", 1, run)
    assert serving.onnx_measurement(run) is None  # nothing exported in the request

    page = lead_client.get(deploy_url(project)).content.decode()
    poll = reverse("training:export-job", args=[project.slug, job.pk])
    assert f'hx-get="{poll}"' in page and 'data-export-job="pending"' in page
    assert "waiting for a worker" in page

    jobs.run_export_job(job.pk)
    job.refresh_from_db()
    measured = serving.onnx_measurement(run)
    assert job.status == "succeeded" and measured is not None
    written = json.loads((serving.onnx_dir_for(run) / "quantization.json").read_text())
    assert job.result == written and written["gold_version"] == 1 and written["examples"] == 5
    # The polled cell comes back with the measurement, and polling stops.
    cell = lead_client.get(poll, headers={"HX-Request": "true"})
    assert cell.status_code == 286
    html = cell.content.decode()
    assert f"{measured['onnx_accuracy']:.3f}" in html and "Quantize again" in html and "hx-get" not in html
    page = lead_client.get(deploy_url(project)).content.decode()
    assert f"int8 <strong>{measured['onnx_accuracy']:.3f}</strong>" in page and poll not in page


def test_a_failed_export_shows_its_error_and_can_be_resumed(
    project, lead, run, lead_client, queues, django_capture_on_commit_callbacks
):
    lead_client.post(deploy_url(project), {"quantize": run.number})  # never evaluated
    job = ExportJob.objects.get()
    jobs.run_export_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "Evaluate run 1 on a gold set before quantizing it."
    page = lead_client.get(deploy_url(project)).content.decode()
    assert 'data-export-job="failed"' in page and job.error in page
    resume = reverse("annotation:job-resume", args=[project.slug, "exportjob", job.pk])
    assert resume in page
    with django_capture_on_commit_callbacks(execute=True):
        lead_client.post(resume)
    job.refresh_from_db()
    assert job.status == "pending" and [j.args for j in queues["short"].jobs] == [(job.pk,)]


def test_an_export_cancelled_while_it_runs_stops_before_exporting(project, lead, run):
    gold_project(project, lead)
    Evaluation.objects.create(
        project=project, run=run, gold_set=GoldSet.objects.get(), subject="student", agent=run.agent
    )
    job = ExportJob.objects.create(project=project, run=run, gold_version=1)
    assert distillapp.jobs.claim(ExportJob, job.pk)
    distillapp.jobs.cancel(ExportJob, job.pk)
    job = serving.export_job_run(job=ExportJob.objects.get(pk=job.pk))
    assert job.status == "cancelled" and serving.onnx_measurement(run) is None


# --- a killed worker -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_killed_evaluation_horse_is_recovered_and_saves_one_set(project, lead, run, queues, settings):
    """tests/test_job_recovery.py's kill test for evaluations: a real rqworker's work horse is
    SIGKILLed while it measures the student; the same worker takes the row up again."""
    from tests.test_job_recovery import STALE_SECONDS, finished, kill_horse, rq_worker, wait_until

    settings.JOB_STALE_SECONDS = STALE_SECONDS
    gold = GoldSet.objects.create(project=project, version=1)
    for i in range(40):
        example = Example.objects.create(project=project, text=f"gold ticket {i}", is_gold=True)
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=GOLD[i % 5])
        Proposal.objects.create(example=example, agent="teacher:m:p1", value=GOLD[i % 5])
    gold.freeze(user=lead)
    with transaction.atomic():
        job = services.evaluation_job_start(run=run, user=lead)

    with rq_worker("short") as worker:
        wait_until(
            # Its horse is loading torch and the model, or predicting: nothing is saved yet.
            lambda: EvaluationJob.objects.filter(
                pk=job.pk, status="running", phase="evaluating the student"
            ).exists(),
            worker,
            timeout=60,
            what="the evaluation to start",
        )
        killed = kill_horse(EvaluationJob, job.pk)
        assert not Evaluation.objects.exists()
        job = finished(EvaluationJob, job.pk, worker, killed=killed, timeout=90)

    assert job.status == "succeeded", job.error
    assert sorted(Evaluation.objects.values_list("subject", flat=True)) == ["student", "teacher"]
    assert job.result == Evaluation.objects.get(subject="student")
    assert job.result.metrics["examples"] == 40 and job.gold_version == 1


def test_recovery_covers_both_job_types(project, run, queues, django_capture_on_commit_callbacks):
    from tests.test_job_recovery import dead_worker

    gone = {"status": "running", "worker": dead_worker(), "heartbeat_at": timezone.now()}
    evaluation = EvaluationJob.objects.create(project=project, run=run, **gone)
    export = ExportJob.objects.create(project=project, run=run, **gone)
    stopping = ExportJob.objects.create(project=project, run=run, is_cancel_requested=True, **gone)
    with django_capture_on_commit_callbacks(execute=True):
        found = distillapp.jobs.recover_all()
    assert found == {"training.EvaluationJob": [evaluation.pk], "training.ExportJob": [export.pk]}
    assert sorted((j.func_name, j.args[0]) for j in queues["short"].jobs) == [
        ("training.jobs.run_evaluation_job", evaluation.pk),
        ("training.jobs.run_export_job", export.pk),
    ]
    assert ExportJob.objects.get(pk=stopping.pk).status == "cancelled"
