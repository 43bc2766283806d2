"""The review queue's random audit share and the unbiased teacher estimate it gives."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import jobs, review
from annotation.models import Example, Proposal, Review, SimilarityIndex
from annotation.review.audit import MIN_AUDIT, teacher_estimate, trusted_confidence
from annotation.review.similar import similar_to

pytestmark = pytest.mark.django_db


def pool(project, n: int = 40):
    """n examples with a teacher proposal each; confidence rises with the index."""
    labels = list(project.labels.values_list("name", flat=True))
    for i in range(n):
        example = Example.objects.create(project=project, text=f"ticket number {i}")
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=labels[i % 2], confidence=i / n)
    Example.objects.filter(project=project).sync_queue_fields()


def review_all(project, user, filters, count: int, verdict: str = "accept") -> list[Example]:
    seen = []
    for _ in range(count):
        example = review.review_next(project=project, user=user, filters=filters)
        seen.append(example)
        review.review_record(example=example, user=user, verdict=verdict)
    return seen


def test_every_tenth_card_is_a_random_audit_draw(project, reviewer):
    pool(project)
    seen = review_all(project, reviewer, review.QueueFilter(strategy="confidence"), 20)
    audits = list(Review.objects.filter(is_audit=True).order_by("pk"))
    assert len(audits) == 2
    reviews = list(Review.objects.order_by("pk"))
    assert [r.is_audit for r in reviews].index(True) == 9  # the 10th card
    # The other cards follow the order: lowest teacher confidence first.
    ordered = [e for e, r in zip(seen, reviews, strict=True) if not r.is_audit]
    confidences = [e.teacher_confidence for e in ordered]
    assert confidences == sorted(confidences)
    # An audit card is the first one of the fixed random order among what was left.
    first_audit = reviews[9].example
    left = Example.objects.filter(project=project).exclude(pk__in=[r.example_id for r in reviews[:9]])
    assert first_audit == left.order_by("queue_rank", "pk").first()


def test_filtered_queues_draw_no_audit_cards_and_the_random_order_is_all_audit(project, reviewer, lead):
    pool(project)
    label = project.labels.first().name
    review_all(project, reviewer, review.QueueFilter(strategy="confidence", label=label), 12)
    assert not Review.objects.filter(is_audit=True).exists()
    review_all(project, lead, review.QueueFilter(strategy="random"), 5)
    assert Review.objects.filter(is_audit=True).count() == 5


def test_no_audit_share_means_no_audit_cards(project, reviewer):
    project.audit_share = 0
    project.save()
    pool(project)
    review_all(project, reviewer, review.QueueFilter(), 15)
    assert not Review.objects.filter(is_audit=True).exists()


def test_the_estimate_uses_audit_verdicts_only(project, reviewer):
    pool(project, 60)
    labels = list(project.labels.values_list("name", flat=True))
    examples = list(Example.objects.filter(project=project).order_by("pk"))
    # 30 audit cards: the teacher is right on the 20 most confident ones and wrong on the 10 others.
    for i, example in enumerate(examples[30:]):
        proposal = example.proposals.get()
        right = i >= 10
        Review.objects.create(
            example=example,
            reviewer=reviewer,
            proposal=proposal,
            verdict="accept" if right else "correct",
            value=proposal.value if right else next(x for x in labels if x != proposal.value),
            is_audit=True,
        )
    # 20 biased cards, all wrong (the risk order shows the worst first).
    for example in examples[:20]:
        proposal = example.proposals.get()
        Review.objects.create(
            example=example, reviewer=reviewer, proposal=proposal, verdict="reject", value=None
        )
    estimate = teacher_estimate(project)
    assert estimate["all"]["n"] == 50 and estimate["all"]["accuracy"] == pytest.approx(20 / 50)
    audit = estimate["estimate"]
    assert audit["n"] == 30 and audit["accuracy"] == pytest.approx(20 / 30)
    assert audit["low"] < 20 / 30 < audit["high"]
    # Wilson 95 % interval of 20 / 30, computed by hand: 0.488 to 0.808.
    assert audit["low"] == pytest.approx(0.4878, abs=1e-3) and audit["high"] == pytest.approx(
        0.8077, abs=1e-3
    )
    # Confidences of the audit cards: 0.5 .. 0.983; right from index 40 on (confidence >= 0.667).
    by_floor = {row["min_confidence"]: row for row in estimate["by_confidence"]}
    assert by_floor[0.7]["accuracy"] == 1.0 and by_floor[0.5]["n"] == 30
    assert trusted_confidence(estimate, target=0.8) is None  # no floor has 20 audit cards that clear 0.8
    # At 0.5: 20 of 30 right, interval from 0.488, not >= 0.5. At 0.6: 20 of 24, from 0.64.
    assert trusted_confidence(estimate, target=0.5)["min_confidence"] == 0.6


def test_the_estimate_waits_for_enough_audit_cards(project, reviewer):
    pool(project)
    review_all(project, reviewer, review.QueueFilter(strategy="random"), MIN_AUDIT - 1)
    assert teacher_estimate(project)["estimate"] is None


def test_dashboard_warns_about_a_weak_teacher(project, reviewer, lead_client):
    pool(project)
    labels = list(project.labels.values_list("name", flat=True))
    for _ in range(MIN_AUDIT):
        example = review.review_next(
            project=project, user=reviewer, filters=review.QueueFilter(strategy="random")
        )
        wrong = next(x for x in labels if x != example.teacher_label)
        review.review_record(example=example, user=reviewer, verdict="correct", label=wrong)
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert 'data-warning="weak-teacher"' in page and 'data-count="teacher-estimate">0.000' in page


def test_more_like_this_serves_the_closest_unreviewed_texts_first(
    project, reviewer, reviewer_client, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    texts = [
        "my card payment was declined at the shop",
        "the card payment failed in the store",
        "payment with my card was refused",
        "how do I change my home address",
        "I moved house, update my address please",
        "what is the weather like today",
    ]
    examples = [Example.objects.create(project=project, text=t) for t in texts]
    Example.objects.filter(project=project).sync_queue_fields()
    # The pool is embedded by its index job (queued at import and intake), never in a request.
    review.similarity_index_start(project_id=project.pk)
    jobs.run_similarity_index(SimilarityIndex.objects.get(project=project).pk)
    url = reverse("annotation:review-similar", args=[project.slug])
    page = reviewer_client.post(url, {"example_id": examples[0].pk}, follow=True).content.decode()
    assert f"Most like #{examples[0].pk}" in page
    # The two other card-payment texts come first, the weather last.
    assert f'data-example-id="{examples[1].pk}"' in page or f'data-example-id="{examples[2].pk}"' in page
    filters = review.QueueFilter(similar=similar_to(examples[0]).ids, similar_to=examples[0].pk)
    order = [e.text for e in filters.order(review.queue(project, filters))]
    assert set(order[:2]) == {texts[1], texts[2]} and order[-1] == texts[5]
    assert not filters.is_unfiltered  # no audit draw interrupts a similarity search
    assert list((tmp_path / "embeddings").rglob("chunk-*.npz"))
    # A gold example is never offered.
    assert reviewer_client.post(url, {"example_id": 999999}).status_code == 404


def test_the_estimate_names_the_teacher_it_measured(project, reviewer, lead_client):
    """#24: the offline teacher's answers change as reviews accumulate; the audit says which
    teacher (agent: model, memory version, prompt version) its cards judged."""
    pool(project)
    review_all(project, reviewer, review.QueueFilter(strategy="random"), MIN_AUDIT)
    estimate = teacher_estimate(project)
    assert estimate["agents"] == {"teacher:m:v1": MIN_AUDIT}
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert '<code data-field="audit-teacher">teacher:m:v1</code>' in page
    # Later cards judged the teacher after it learnt from more reviews: another name.
    Proposal.objects.filter(example__review_state="unreviewed").update(agent="teacher:m.mem20-abcdef:v1")
    review_all(project, reviewer, review.QueueFilter(strategy="random"), 5)
    assert teacher_estimate(project)["agents"] == {"teacher:m:v1": MIN_AUDIT, "teacher:m.mem20-abcdef:v1": 5}
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert "over 2 teacher versions" in page
