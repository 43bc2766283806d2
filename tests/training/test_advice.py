"""The launch form's recommended label source, from the measured teacher and students."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Example, GoldSet, Proposal, Review
from training import services
from training.models import Evaluation, TrainingRun

pytestmark = pytest.mark.django_db


def audited(project, reviewer, outcomes: list[tuple[float, bool]]):
    """One audit review per (teacher confidence, teacher right?)."""
    labels = list(project.labels.values_list("name", flat=True))
    for i, (confidence, right) in enumerate(outcomes):
        example = Example.objects.create(project=project, text=f"audited ticket {i}")
        proposal = Proposal.objects.create(
            example=example, agent="teacher:m:v1", value=labels[0], confidence=confidence
        )
        Review.objects.create(
            example=example,
            reviewer=reviewer,
            proposal=proposal,
            verdict="accept" if right else "correct",
            value=labels[0] if right else labels[1],
            is_audit=True,
        )
    Example.objects.filter(project=project).sync_queue_fields()


def unreviewed_pool(project, n: int = 50):
    """Teacher labels nobody reviewed yet: what a run on all current labels would learn from."""
    label = project.labels.values_list("name", flat=True).first()
    for i in range(n):
        example = Example.objects.create(project=project, text=f"pool ticket {i}")
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=label, confidence=0.7)
    Example.objects.filter(project=project).sync_queue_fields()


@pytest.fixture
def pool(project):
    unreviewed_pool(project)


def gold_evaluation(project, *, subject, score, examples=200, run=None):
    gold = GoldSet.objects.filter(project=project).first() or GoldSet.objects.create(
        project=project, version=1
    )
    return Evaluation.objects.create(
        project=project,
        run=run,
        gold_set=gold,
        subject=subject,
        agent=run.agent if run else "teacher:m:v1",
        metrics={"score": score, "accuracy": score, "examples": examples},
    )


def test_without_a_measure_the_advice_says_so(project, pool):
    advice = services.label_source_advice(project)
    assert advice["label_source"] == "all" and advice["noise_handling"] == "prune"
    assert "not been measured without bias" in advice["reason"] and not advice["warning"]


def test_a_strong_teacher_keeps_all_labels(project, pool, reviewer):
    audited(project, reviewer, [(0.9, True)] * 28 + [(0.4, False)] * 2)
    advice = services.label_source_advice(project)
    assert (advice["label_source"], advice["noise_handling"]) == ("all", "prune")
    assert (
        advice["teacher"]["source"] == "30 audit reviews of unreviewed examples (teacher:m:v1)"
        and not advice["warning"]
    )


def test_a_middling_teacher_is_pruned_not_weighted_even_when_its_confidence_tells(project, pool, reviewer):
    # Right on 73 %, and its confident half far more often: weighting still measured worse.
    audited(project, reviewer, [(0.9, True)] * 22 + [(0.4, False)] * 8)
    advice = services.label_source_advice(project)
    assert (advice["label_source"], advice["noise_handling"]) == ("all", "prune")
    assert advice["audit"]["confidence_gap"] >= 0.5 and "not weighted in" in advice["reason"]
    # The gap in words a lead reads: 15 cards above the median all right, 7 of 15 below.
    assert (
        "more confident half is right 53 percentage points more often than the other half" in advice["reason"]
    )


def test_a_middling_teacher_whose_confidence_says_nothing_is_only_pruned(project, pool, reviewer):
    # Right on 75 %, as often at confidence 0.9 as at 0.5: weighting by it would only cost labels.
    audited(
        project, reviewer, ([(0.9, True)] * 3 + [(0.9, False)]) * 5 + ([(0.5, True)] * 3 + [(0.5, False)]) * 5
    )
    advice = services.label_source_advice(project)
    assert (advice["label_source"], advice["noise_handling"]) == ("all", "prune")
    assert advice["audit"]["confidence_gap"] == 0.0 and "not weighted in" in advice["reason"]


def test_a_weak_teacher_is_trusted_only_where_the_audit_shows_it_right(project, pool, reviewer):
    # Right on all 40 cards at confidence 0.95 (Wilson low end 0.912), wrong on the 75 others.
    audited(project, reviewer, [(0.95, True)] * 40 + [(0.3, False)] * 75)
    advice = services.label_source_advice(project)
    assert advice["label_source"] == "reviewed+teacher" and advice["teacher_min_confidence"] == 0.5
    assert "35%" in advice["warning"] and "drown" in advice["warning"]


def test_a_weak_teacher_with_no_trusted_confidence_means_reviewed_labels_only(project, pool, reviewer):
    audited(project, reviewer, [(0.9, False)] * 20 + [(0.9, True)] * 5)
    advice = services.label_source_advice(project)
    assert (advice["label_source"], advice["noise_handling"]) == ("reviewed", "none")
    assert advice["warning"]


def test_gold_beats_the_audit_and_a_reviewed_only_student_can_beat_the_teacher(project, pool, reviewer, lead):
    audited(project, reviewer, [(0.9, True)] * 40)  # the audit alone would say: strong
    gold_evaluation(project, subject="teacher", score=0.70, examples=400)
    run = TrainingRun.objects.create(project=project, number=1, status="succeeded", label_source="reviewed")
    gold_evaluation(project, subject="student", score=0.80, run=run)
    advice = services.label_source_advice(project)
    assert advice["teacher"]["source"] == "gold v1 (teacher:m:v1)" and advice["teacher"]["high"] < 0.80
    assert advice["reviewed_only_student"] == {"accuracy": 0.80, "run": 1, "kind": "finetune"}
    assert advice["label_source"] == "reviewed+teacher"  # the audit shows 0.9-confidence labels right
    assert "run 1" in advice["warning"] and "0.800" in advice["warning"]


def test_the_launch_form_starts_from_the_recommendation(project, pool, reviewer, lead_client):
    audited(project, reviewer, [(0.9, False)] * 20 + [(0.9, True)] * 5)
    page = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert 'data-advice="reviewed"' in page and "Reviewed labels only" in page
    assert '<option value="reviewed" selected>' in page


def test_an_extraction_project_is_advised_the_noise_handling_its_bench_chose(lead, reviewer, lead_client):
    from annotation import projects
    from tasks.extraction.task import ExtractionTask

    extraction = projects.project_create(
        name="Bookings", slug="bookings", user=lead, task_type="extraction", labels=[("date", "The day")]
    )
    advice = services.label_source_advice(extraction)
    chosen = ExtractionTask.advised_noise_handling
    assert (advice["label_source"], advice["noise_handling"]) == ("all", chosen)
    assert "label_smoothing" not in advice  # the extraction fine-tune has no smoothing
    page = lead_client.get(reverse("training:runs", args=[extraction.slug])).content.decode()
    if chosen == "none":
        assert advice["reason"].endswith("all current labels.") and "scores flag" not in page
    else:
        assert "label-quality scores flag" in advice["reason"] and "label-quality scores flag" in page


def test_a_project_of_verified_labels_is_not_told_about_the_teacher(project, lead, lead_client):
    """#24: old code proposed pruning and said "the teacher has not been measured" on a project
    whose every label people gave or verified."""
    labels = list(project.labels.values_list("name", flat=True))
    for i in range(12):
        example = Example.objects.create(project=project, text=f"verified ticket {i}")
        Review.objects.create(
            example=example,
            reviewer=lead,
            verdict="correct",
            value=labels[i % 3],
            is_bulk=True,
            is_import=True,
        )
    Example.objects.filter(project=project).sync_queue_fields()
    advice = services.label_source_advice(project)
    assert (advice["label_source"], advice["noise_handling"]) == ("all", "none")
    assert "given or verified by people" in advice["reason"] and not advice["warning"]
    page = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert "not been measured" not in page and "label-quality scores flag" not in page
    assert '<option value="none" selected>' in page  # noise handling: nothing to prune


def test_a_weak_teacher_with_nothing_reviewed_does_not_speak_of_drowning_reviewed_labels(project, pool):
    gold_evaluation(project, subject="teacher", score=0.40, examples=400)
    advice = services.label_source_advice(project)
    assert advice["label_source"] == "all"  # "reviewed only" would be an empty training set
    assert "drown" not in advice["warning"] and "No label is reviewed yet" in advice["warning"]


def test_the_launch_form_of_an_extraction_project_speaks_of_its_own_students(lead, lead_client):
    """#24: old code showed the quick student's C "measured best on Banking77" and the kinds'
    Banking77 figures on an extraction project."""
    from annotation import projects

    extraction = projects.project_create(
        name="Bookings", slug="bookings", user=lead, task_type="extraction", labels=[("date", "The day")]
    )
    page = lead_client.get(reverse("training:runs", args=[extraction.slug])).content.decode()
    assert "Banking77" not in page and "labels that hinge" not in page
    assert "Restaurant-8k" in page and "Weight the tags of rare fields" in page
    tickets = projects.project_create(name="T", slug="t", user=lead, labels=[("Billing", "")])
    page = lead_client.get(reverse("training:runs", args=[tickets.slug])).content.decode()
    assert "10 measured best on Banking77" in page and "Weight rare labels up" in page
