"""Review rounds: after every N verdicts a quick student retrains and refreshes the queue."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rq import SimpleWorker

from annotation import review
from annotation.models import Example, Proposal, Review
from annotation.review.rounds import after_verdict, refresh_due, round_status
from tests.conftest import make_project
from training.models import TrainingRun

from .test_training import labelled

pytestmark = pytest.mark.django_db


def verdicts(project, user, n: int) -> None:
    for _ in range(n):
        example = review.review_next(project=project, user=user, filters=review.QueueFilter())
        review.review_record(example=example, user=user, verdict="accept")


def test_a_round_ends_once_after_refresh_every_verdicts(
    project, reviewer, django_capture_on_commit_callbacks
):
    project.refresh_every = 5
    project.save()
    labelled(project, reviewer, 6)
    sent = []

    def receiver(sender, project, **kwargs):
        sent.append(project.pk)

    refresh_due.connect(receiver, dispatch_uid="test-round")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            verdicts(project, reviewer, 4)
        assert sent == [] and round_status(project)["until_refresh"] == 1
        with django_capture_on_commit_callbacks(execute=True):
            verdicts(project, reviewer, 1)
        assert sent == [project.pk]
        project.refresh_from_db()
        assert project.refreshed_at_verdicts == 5 and round_status(project)["until_refresh"] == 5
        # Asking again without a new verdict starts nothing.
        assert after_verdict(project) is False
    finally:
        refresh_due.disconnect(dispatch_uid="test-round")


@pytest.mark.django_db(transaction=True)
def test_a_finished_round_trains_a_quick_student_that_reorders_the_queue(
    project, reviewer, lead, tiny_base, queues, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    settings.STUDENT_BASE_MODELS = [tiny_base]
    project.refresh_every = 4
    project.save()
    labelled(project, reviewer)
    worker = SimpleWorker([queues["training"]], connection=queues["training"].connection)
    verdicts(project, reviewer, 4)  # the signal goes after commit: autocommit, so at once
    # The reviewer's request only queued the refresh: choosing the label source and counting
    # the training set read every label (seconds on a big pool), so the worker does it.
    assert not TrainingRun.objects.exists()
    assert [job.func_name for job in queues["training"].jobs] == ["training.jobs.run_round_refresh"]
    worker.work(burst=True)
    first = TrainingRun.objects.get()
    assert first.kind == "quick" and first.hyperparameters["review_round"] is True
    assert first.created_by is None and first.hyperparameters["noise_handling"] == "prune"
    worker.work(burst=True)
    first.refresh_from_db()
    assert first.status == "succeeded", first.traceback
    assert Proposal.objects.filter(agent=first.agent).count() == 24
    assert Example.objects.exclude(student_label="").count() == 24  # the disagreement key is fresh
    assert project.quality_runs.exists()  # and the likely-errors key is being scored again

    verdicts(project, reviewer, 4)
    worker.work(burst=True)
    second = TrainingRun.objects.order_by("-number").first()
    assert second.number == first.number + 1 and second.kind == "quick"
    assert second.status == "succeeded", second.traceback
    # The new round's student replaced the old one on the queue.
    assert not Proposal.objects.filter(agent=first.agent).exists()
    assert Proposal.objects.filter(agent=second.agent).count() == 24


def test_no_refresh_while_one_is_on_its_way(project, reviewer, lead):
    from training.services.round_refresh import refresh_queue

    labelled(project, reviewer)
    assert refresh_queue(project=project)[0] is not None
    run, outcome = refresh_queue(project=project)
    assert run is None and outcome == "Run 1 of an earlier round was still on its way."
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_round_on_an_extraction_project_refreshes_its_student_spans(
    lead, reviewer, reviewer_client, queues, settings, tmp_path
):
    from .test_extraction_training import FIELDS, proposed

    settings.DATA_DIR = tmp_path
    project = make_project(lead=lead, reviewer=reviewer, slug="bookings", labels=FIELDS)
    project.task_type = "extraction"
    project.refresh_every = 4
    project.save()
    project.forget_task()
    proposed(project, 24)
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert 'data-count="until-refresh">4<' in page  # the review page counts down to the refresh
    worker = SimpleWorker([queues["training"]], connection=queues["training"].connection)
    verdicts(project, reviewer, 4)
    assert [job.func_name for job in queues["training"].jobs] == ["training.jobs.run_round_refresh"]
    worker.work(burst=True)
    first = TrainingRun.objects.get()
    assert first.kind == "quick" and first.hyperparameters["review_round"] is True
    # The round's noise handling is the advice's: what the bench chose for extraction.
    assert first.hyperparameters["noise_handling"] == project.task.advised_noise_handling
    assert project.quality_runs.exists()  # the likely span errors are scored again
    worker.work(burst=True)
    first.refresh_from_db()
    assert first.status == "succeeded", first.traceback
    students = Proposal.objects.filter(agent=first.agent)
    assert students.count() == 24
    for proposal in students:
        project.task.validate(proposal.value, text=proposal.example.text)  # spans, each with a confidence
        assert all(0 <= s["confidence"] <= 1 for s in proposal.value["spans"])
    # The queue's student keys are fresh: the student's spans, and whether they differ from the teacher's.
    assert Example.objects.filter(project=project, student_confidence__isnull=False).count() == 24
    assert Example.objects.filter(project=project).exclude(student_label="").exists()

    verdicts(project, reviewer, 4)
    worker.work(burst=True)
    second = TrainingRun.objects.order_by("-number").first()
    assert second.number == first.number + 1 and second.status == "succeeded", second.traceback
    assert not Proposal.objects.filter(agent=first.agent).exists()
    assert Proposal.objects.filter(agent=second.agent).count() == 24


def test_the_review_page_shows_the_budget_and_the_next_refresh(project, reviewer, reviewer_client):
    project.review_budget = 10
    project.refresh_every = 8
    project.save()
    labelled(project, reviewer, 6)
    verdicts(project, reviewer, 3)
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert 'data-count="budget-left">7<' in page and 'data-count="until-refresh">5<' in page
    verdicts(project, reviewer, 7)
    assert round_status(project)["budget_reached"]
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert 'data-count="budget-reached"' in page


def test_the_lead_sets_the_order_budget_and_rounds(project, reviewer, lead_client, reviewer_client):
    labelled(project, reviewer, 6)
    response = lead_client.post(
        reverse("annotation:project-settings", args=[project.slug]),
        {
            "name": project.name,
            "guidelines": "",
            "review_order": "oldest",
            "review_budget": 50,
            "refresh_every": 25,
            "audit_share": 0.2,
        },
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.review_order, project.review_budget, project.refresh_every, project.audit_share) == (
        "oldest",
        50,
        25,
        0.2,
    )
    # A reviewer who has not chosen an order gets the project's.
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert review.STRATEGIES["oldest"] in page
    first = Example.objects.filter(project=project).order_by("pk").first()
    assert f'data-example-id="{first.pk}"' in page
    bad = lead_client.post(
        reverse("annotation:project-settings", args=[project.slug]),
        {"name": project.name, "review_order": "oldest", "refresh_every": 25, "audit_share": 3},
    )
    assert bad.status_code == 200 and "between 0 and 1" in bad.content.decode()
    assert Review.objects.count() == 0


def test_a_new_project_can_be_any_registered_task_type(lead, lead_client):
    from annotation.models import Project

    lead.is_staff = True
    lead.save()
    page = lead_client.get(reverse("annotation:project-create")).content.decode()
    assert 'value="extraction"' in page and 'value="summarization"' in page
    # A task type's own settings come with the form, marked with their type.
    assert 'name="summarization__target_length"' in page and 'data-task-type="summarization"' in page
    response = lead_client.post(
        reverse("annotation:project-create"),
        {
            "name": "Calls",
            "task_type": "summarization",
            "summarization__target_unit": "words",
            "summarization__target_length": "30",
            "summarization__style": "For the team lead.",
        },
    )
    assert response.status_code == 302
    calls = Project.objects.get(slug="calls")
    assert calls.task.target == {"unit": "words", "length": 30}
    assert "For the team lead." in calls.task.prompt_block()


def test_a_budget_in_reviewer_hours_counts_the_time_on_each_card(
    project, reviewer, reviewer_client, lead_client
):
    def save_hours(hours: str):
        form = {"name": project.name, "guidelines": "", "review_order": "oldest", "refresh_every": 25}
        url = reverse("annotation:project-settings", args=[project.slug])
        return lead_client.post(url, {**form, "audit_share": 0.1, "review_budget_hours": hours})

    response = save_hours("-1")
    assert response.status_code == 200 and "A number of hours above 0" in response.content.decode()
    response = save_hours("0.02")
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.review_budget_hours == 0.02 and project.review_budget is None  # 72 seconds

    labelled(project, reviewer, 6)
    verdicts(project, reviewer, 3)
    # Two timed cards (10 s, 20 s) and one without a time, which counts as their mean.
    for review_row, seconds in zip(Review.objects.order_by("pk"), [10, 20, None], strict=True):
        review_row.seconds_spent = seconds
        review_row.save()
    status = round_status(project)
    assert status["hours_spent"] * 3600 == pytest.approx(45)
    assert status["hours_left"] * 3600 == pytest.approx(27)
    assert status["cards_left_in_hours"] == 1 and status["hours_percent"] == 62
    assert not status["budget_reached"] and status["budget_left"] is None
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert 'data-count="hours-left">0.0<' in page and 'data-count="cards-left-in-hours">1<' in page

    # A card left open for over an hour was a break: it counts 600 s, and the budget is spent.
    verdicts(project, reviewer, 1)
    Review.objects.filter(pk=Review.objects.order_by("-pk")[0].pk).update(seconds_spent=5000)
    status = round_status(project)
    assert status["hours_spent"] * 3600 == pytest.approx(4 * (10 + 20 + 600) / 3)
    assert status["budget_reached"] and status["hours_left"] == 0
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert 'data-count="budget-reached"' in page and "reviewer hours" in page
