from __future__ import annotations

import json

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, FrozenGoldSetError, GoldSet, GoldSetItem, Membership, Proposal, Review
from tasks import Category, task_for

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
    task = task_for("classification", [Category("A"), Category("B")])
    result = task.agreement(list(zip(first, second, strict=True)))
    # observed 4/6, chance 0.5*0.5 + 0.5*0.5 = 0.5: kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
    assert result["observed"] == pytest.approx(4 / 6)
    assert result["kappa"] == pytest.approx(1 / 3)
    assert result["per_label"]["A"] == pytest.approx(1 / 3)
    assert task.agreement([])["kappa"] is None


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
    assert sorted(gold.items.values_list("answer", flat=True)) == ["Billing", "Billing", "Other"]
    with pytest.raises(FrozenGoldSetError):
        GoldSetItem.objects.filter(gold_set=gold).update(answer="Billing")
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
    lead_client.post(reverse("annotation:gold-draw", args=[project.slug]), {"size": 4, "source": "all"})
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


# --- only items of the draft gold set (issue 12, finding 4) -------------------------------------


def test_blind_labels_only_for_items_of_the_draft(project, corpus, lead, reviewer, reviewer_client):
    gold = review.gold_draw(project=project, size=2, seed=1)
    outside = Example.objects.filter(project=project, is_gold=False, source="imported").first()
    url = reverse("annotation:gold-label", args=[project.slug])
    response = reviewer_client.post(url, {"example_id": outside.pk, "label": "Other"})
    assert response.status_code == 404
    assert not Review.objects.filter(example=outside).exists()
    with pytest.raises(review.ReviewError, match="not an item of gold set v1"):
        review.gold_label_blind(gold_set=gold, example=outside, user=reviewer, label="Other")
    # Items of a frozen version are not labelled again either.
    items = list(gold.items.order_by("pk"))
    for item in items:
        Review.objects.create(
            example=item.example, reviewer=lead, kind="blind", verdict="correct", value="Other"
        )
        Review.objects.create(
            example=item.example, reviewer=reviewer, kind="blind", verdict="correct", value="Other"
        )
    review.gold_freeze(gold_set=gold, user=lead)
    review.gold_draw(project=project, size=1, seed=2)
    response = reviewer_client.post(url, {"example_id": items[0].example_id, "label": "Billing"})
    assert response.status_code == 404


def test_adjudication_only_for_draft_items_with_two_blind_labels(
    project, corpus, lead, reviewer, second_reviewer, lead_client
):
    gold = review.gold_draw(project=project, size=2, seed=1)
    outside = Example.objects.filter(project=project, is_gold=False, source="imported").first()
    Review.objects.create(example=outside, reviewer=reviewer, verdict="correct", value="Technical support")
    url = reverse("annotation:gold-adjudicate", args=[project.slug])
    response = lead_client.post(url, {"example_id": outside.pk, "label": "Billing"})
    assert response.status_code == 404
    # The reviewer's correction still stands; no adjudication outranks it.
    assert Example.objects.with_current_label().get(pk=outside.pk).current_label == "Technical support"
    assert not Review.objects.filter(kind="adjudication").exists()

    half_done = gold.items.order_by("pk").first().example
    review.gold_label_blind(gold_set=gold, example=half_done, user=reviewer, label="Billing")
    with pytest.raises(review.ReviewError, match="two blind labels"):
        review.gold_adjudicate(gold_set=gold, example=half_done, user=lead, label="Other")
    lead_client.post(url, {"example_id": half_done.pk, "label": "Other"})
    assert not Review.objects.filter(kind="adjudication").exists()


# --- reject ("no label fits") and skip (issue 14, item 3) -----------------------------------------


def test_reject_is_its_own_category_for_kappa_and_leaves_no_gold_label(
    project, corpus, lead, reviewer, second_reviewer
):
    gold = review.gold_draw(project=project, size=4, seed=1)
    items = [i.example for i in gold.items.order_by("pk")]
    answers = [  # (first reviewer, second reviewer); None is a reject
        (None, None),
        ("Billing", "Billing"),
        (None, "Other"),
        ("Other", "Other"),
    ]
    for example, pair in zip(items, answers, strict=True):
        for user, answer in zip((reviewer, second_reviewer), pair, strict=True):
            review.gold_label_blind(
                gold_set=gold,
                example=example,
                user=user,
                label=answer,
                verdict="reject" if answer is None else "correct",
            )
    blind = Review.objects.filter(example=items[0], kind="blind")
    assert {(r.verdict, r.value) for r in blind} == {("reject", None)}

    status = review.gold_status(gold)
    assert [r["labels"] for r in status["rows"]] == [
        [review.REJECT, review.REJECT],
        ["Billing", "Billing"],
        [review.REJECT, "Other"],
        ["Other", "Other"],
    ]
    # Agreement counts the reject like a label: 3 of 4 agree; kappa by hand:
    # first = R B R O, second = R B O O; p_o = 3/4; p_e = (2*1 + 1*1 + 1*2)/16 = 5/16.
    assert status["agreement"]["observed"] == pytest.approx(3 / 4)
    assert status["agreement"]["kappa"] == pytest.approx((3 / 4 - 5 / 16) / (1 - 5 / 16))
    assert review.REJECT in status["agreement"]["per_label"]
    assert (status["final"], status["rejected"], status["disagreements"]) == (3, 1, 1)

    row = review.gold_next_disagreement(gold)
    assert row["item"].example == items[2]
    review.gold_adjudicate(gold_set=gold, example=items[2], user=lead, verdict="reject")
    status = review.gold_status(gold)
    assert (status["final"], status["rejected"], status["disagreements"]) == (4, 2, 0)
    review.gold_freeze(gold_set=gold, user=lead)
    labels = dict(gold.items.values_list("example_id", "answer"))
    assert [labels[e.pk] for e in items] == [None, "Billing", None, "Other"]
    # The adjudicated reject is the example's current answer: no label.
    assert Example.objects.with_current_label().get(pk=items[2].pk).label_state == "rejected"


def test_a_reject_needs_no_label_but_a_label_must_be_the_projects(project, corpus, reviewer):
    gold = review.gold_draw(project=project, size=1, seed=1)
    example = gold.items.get().example
    with pytest.raises(review.ReviewError, match="not one of the project's labels"):
        review.gold_label_blind(gold_set=gold, example=example, user=reviewer, label="Nope")
    with pytest.raises(review.ReviewError, match="Unknown verdict"):
        review.gold_label_blind(
            gold_set=gold, example=example, user=reviewer, label="Other", verdict="accept"
        )


def card_id(response) -> int | None:
    html = response.content.decode()
    return int(html.split('data-example-id="')[1].split('"')[0]) if 'data-example-id="' in html else None


def test_skip_is_not_an_answer_and_the_item_comes_back_later(project, corpus, reviewer, reviewer_client):
    review.gold_draw(project=project, size=3, seed=1)
    url = reverse("annotation:gold-label", args=[project.slug])
    htmx = {"HX-Request": "true"}
    first = card_id(reviewer_client.get(url, headers=htmx))
    second = card_id(reviewer_client.post(url, {"example_id": first, "verdict": "skip"}, headers=htmx))
    assert second != first and not Review.objects.exists()
    third = card_id(reviewer_client.post(url, {"example_id": second, "verdict": "reject"}, headers=htmx))
    assert third not in (first, second)
    again = card_id(reviewer_client.post(url, {"example_id": third, "label": "Billing"}, headers=htmx))
    assert again == first  # nothing else left: the skipped item comes back
    assert sorted(Review.objects.values_list("verdict", flat=True)) == ["correct", "reject"]
    page = reviewer_client.get(url).content.decode()
    assert 'data-key="x"' in page and 'data-key="s"' in page


def test_adjudication_page_counts_n_of_m_and_offers_reject_and_skip(
    project, corpus, lead, reviewer, second_reviewer, lead_client
):
    gold = review.gold_draw(project=project, size=3, seed=1)
    label_all(gold, reviewer, second_reviewer, ["Other", "Other", "Billing"])  # two disagreements
    url = reverse("annotation:gold-adjudicate", args=[project.slug])
    htmx = {"HX-Request": "true"}
    page = lead_client.get(url, headers=htmx)
    html = page.content.decode()
    assert "Disagreement <strong>1</strong> of <strong>2</strong>" in html
    assert 'data-key="x"' in html and 'data-key="s"' in html
    first = card_id(page)
    skipped = lead_client.post(url, {"example_id": first, "verdict": "skip"}, headers=htmx)
    second = card_id(skipped)
    assert (
        second != first
        and "Disagreement <strong>1</strong> of <strong>2</strong>" in skipped.content.decode()
    )
    after = lead_client.post(url, {"example_id": second, "verdict": "reject"}, headers=htmx)
    assert (
        card_id(after) == first
        and "Disagreement <strong>2</strong> of <strong>2</strong>" in after.content.decode()
    )
    assert Review.objects.get(kind="adjudication").verdict == "reject"
    done = lead_client.post(url, {"example_id": first, "label": "Billing"}, headers=htmx)
    assert "No disagreements left" in done.content.decode()


def test_the_draw_never_offers_more_than_the_project_has(project, corpus, lead_client):
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    # 10 real examples (2 synthetic are never drawn): the default is 5 (never more than half:
    # a default draw never takes the whole corpus out of training), not 200.
    assert 'name="size" value="5"' in page


def test_a_blind_label_costs_the_same_queries_with_a_big_gold_set(
    project, reviewer, reviewer_client, django_assert_max_num_queries
):
    from annotation.models import content_hash

    def post_one() -> None:
        url = reverse("annotation:gold-label", args=[project.slug])
        example_id = card_id(reviewer_client.get(url, headers={"HX-Request": "true"}))
        with django_assert_max_num_queries(25):  # 3 of them: the item lock and a savepoint (issue #23)
            reviewer_client.post(
                url, {"example_id": example_id, "label": "Other"}, headers={"HX-Request": "true"}
            )

    Example.objects.bulk_create(
        [Example(project=project, text=f"t {i}", content_hash=content_hash(f"t {i}")) for i in range(1000)]
    )
    review.gold_draw(project=project, size=10, seed=1)
    post_one()
    review.gold_draw(project=project, size=990, seed=1)
    post_one()
