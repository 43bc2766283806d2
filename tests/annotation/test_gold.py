from __future__ import annotations

import json

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, FrozenGoldSetError, GoldSet, GoldSetItem, Membership, Proposal, Review

pytestmark = pytest.mark.django_db


@pytest.fixture
def second_reviewer(django_user_model, project):
    user = django_user_model.objects.create_user(username="sam_second", password="pw")
    Membership.objects.create(project=project, user=user, role="reviewer")
    return user


@pytest.fixture
def corpus(project):
    examples = []
    for i in range(12):
        example = Example.objects.create(
            project=project, text=f"ticket {i}", source="synthetic" if i >= 10 else "imported"
        )
        label = ["Billing", "Technical support", "Other"][i % 3]
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=label, confidence=0.7)
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    return examples


def test_draw_takes_real_examples_only_and_takes_them_out_of_training(project, corpus):
    gold = review.gold_draw(project=project, size=50, seed=1)
    drawn = Example.objects.filter(gold_items__gold_set=gold)
    assert drawn.count() == 10  # the two synthetic ones are never drawn
    assert not drawn.filter(source="synthetic").exists()
    assert all(e.is_gold for e in drawn)
    assert not Example.objects.not_gold().filter(pk__in=drawn).exists()
    assert not review.queue(project, review.QueueFilter()).filter(pk__in=drawn).exists()


def test_stratified_draw_covers_every_label(project, corpus):
    gold = review.gold_draw(project=project, size=3, stratified=True, seed=2)
    labels = {e.teacher_label for e in Example.objects.filter(gold_items__gold_set=gold)}
    assert labels == {"Billing", "Technical support", "Other"}


def test_a_second_draw_adds_to_the_same_draft(project, corpus):
    first = review.gold_draw(project=project, size=3, seed=1)
    again = review.gold_draw(project=project, size=3, seed=2)
    assert first == again and again.items.count() == 6


def test_blind_card_hides_the_teacher_and_the_other_label(
    project, corpus, reviewer_client, reviewer, second_reviewer
):
    gold = review.gold_draw(project=project, size=1, seed=1)
    example = gold.items.get().example
    review.gold_label_blind(gold_set=gold, example=example, user=second_reviewer, label="Other")
    html = reviewer_client.get(reverse("annotation:gold-label", args=[project.slug])).content.decode()
    assert example.text in html
    assert "teacher:m:prompt-v1" not in html and "Accept" not in html and "conf" not in html
    assert "sam_second" not in html
    # Every label is offered the same way: no button is marked as proposed.
    assert "is-proposed" not in html


def test_two_different_reviewers_then_no_more(project, corpus, reviewer, second_reviewer, lead):
    gold = review.gold_draw(project=project, size=1, seed=1)
    example = gold.items.get().example
    review.gold_label_blind(gold_set=gold, example=example, user=reviewer, label="Billing")
    with pytest.raises(review.ReviewError, match="already labelled"):
        review.gold_label_blind(gold_set=gold, example=example, user=reviewer, label="Other")
    assert review.gold_next_blind(gold_set=gold, user=reviewer) is None
    assert review.gold_next_blind(gold_set=gold, user=second_reviewer) == example
    review.gold_label_blind(gold_set=gold, example=example, user=second_reviewer, label="Billing")
    with pytest.raises(review.ReviewError, match="already has two"):
        review.gold_label_blind(gold_set=gold, example=example, user=lead, label="Billing")


def test_kappa_against_a_hand_computed_case():
    first = ["A", "A", "B", "B", "A", "B"]
    second = ["A", "B", "B", "B", "A", "A"]
    result = review.agreement(list(zip(first, second, strict=True)))
    # observed 4/6, chance 0.5*0.5 + 0.5*0.5 = 0.5: kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
    assert result["observed"] == pytest.approx(4 / 6)
    assert result["kappa"] == pytest.approx(1 / 3)
    assert result["per_label"]["A"] == pytest.approx(1 / 3)
    assert review.agreement([])["kappa"] is None


def label_all(gold, reviewer, second_reviewer, second_labels):
    for item, second_label in zip(gold.items.order_by("pk"), second_labels, strict=True):
        review.gold_label_blind(gold_set=gold, example=item.example, user=reviewer, label="Billing")
        review.gold_label_blind(gold_set=gold, example=item.example, user=second_reviewer, label=second_label)


def test_adjudicate_freeze_and_export(project, corpus, reviewer, second_reviewer, lead, tmp_path):
    gold = review.gold_draw(project=project, size=3, seed=1)
    label_all(gold, reviewer, second_reviewer, ["Billing", "Other", "Billing"])
    status = review.gold_status(gold)
    assert (status["double_labelled"], status["disagreements"], status["final"]) == (3, 1, 2)
    with pytest.raises(review.ReviewError, match="1 of 3 items have no final label"):
        review.gold_freeze(gold_set=gold, user=lead)

    row = review.gold_next_disagreement(gold)
    assert row["labels"] == ["Billing", "Other"]
    review.gold_adjudicate(gold_set=gold, example=row["item"].example, user=lead, label="Other")
    assert review.gold_next_disagreement(gold) is None
    review.gold_freeze(gold_set=gold, user=lead)
    gold.refresh_from_db()
    assert gold.is_frozen
    assert sorted(gold.items.values_list("label", flat=True)) == ["Billing", "Billing", "Other"]
    with pytest.raises(FrozenGoldSetError):
        GoldSetItem.objects.filter(gold_set=gold).update(label="Billing")
    with pytest.raises(review.ReviewError, match="frozen"):
        review.gold_adjudicate(gold_set=gold, example=row["item"].example, user=lead, label="Billing")

    # The next draw starts version 2; version 1 stays as it was.
    assert review.gold_draw(project=project, size=1, seed=3).version == 2

    from django.core.management import call_command

    out = tmp_path / "gold.jsonl"
    call_command("export_examples", "--project", project.slug, "--gold", "1", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    adjudicated = next(r for r in rows if r["example_id"] == row["item"].example_id)
    kinds = sorted((r["kind"], r["value"]) for r in adjudicated["provenance"]["reviews"])
    assert kinds == [("adjudication", "Other"), ("blind", "Billing"), ("blind", "Other")]
    assert adjudicated["label"] == "Other"
    assert adjudicated["provenance"]["latest_proposal"]["agent"] == "teacher:m:prompt-v1"


def test_gold_pages_and_permissions(project, corpus, lead_client, reviewer_client, outsider_client):
    assert (
        reviewer_client.post(reverse("annotation:gold-draw", args=[project.slug]), {"size": 2}).status_code
        == 403
    )
    assert outsider_client.get(reverse("annotation:gold", args=[project.slug])).status_code == 404
    lead_client.post(reverse("annotation:gold-draw", args=[project.slug]), {"size": 4})
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    assert 'data-count="gold-items">4<' in page
    assert reviewer_client.get(reverse("annotation:gold-adjudicate", args=[project.slug])).status_code == 403
    assert reviewer_client.post(reverse("annotation:gold-freeze", args=[project.slug])).status_code == 403
    card = reviewer_client.get(
        reverse("annotation:gold-label", args=[project.slug]), headers={"HX-Request": "true"}
    )
    example_id = int(card.content.decode().split('data-example-id="')[1].split('"')[0])
    reviewer_client.post(
        reverse("annotation:gold-label", args=[project.slug]), {"example_id": example_id, "label": "Other"}
    )
    assert Review.objects.get(kind="blind").value == "Other"


def test_a_frozen_gold_set_is_never_a_draft(project, corpus, lead):
    gold = GoldSet.objects.create(project=project, version=1)
    gold.freeze(user=lead)
    assert review.gold_draft(project) is None
