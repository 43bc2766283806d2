from __future__ import annotations

import pytest

from annotation.models import (
    Example,
    FrozenGoldSetError,
    GoldSet,
    GoldSetItem,
    Proposal,
    Review,
    content_hash,
)

pytestmark = pytest.mark.django_db


def make_example(project, text: str = "my card was charged twice", **extra) -> Example:
    return Example.objects.create(project=project, text=text, **extra)


def current(example: Example) -> tuple:
    row = Example.objects.with_current_label().get(pk=example.pk)
    return row.current_label, row.label_state


def test_content_hash_ignores_case_spacing_and_unicode_forms():
    assert content_hash("Refund  please\n") == content_hash("refund please")
    assert content_hash("ｒｅｆｕｎｄ") == content_hash("refund")  # full-width forms
    assert content_hash("refund please") != content_hash("refund please!")


def test_example_hash_is_set_on_save(project):
    example = make_example(project, "Hello  World")
    assert example.content_hash == content_hash("hello world")


def test_unlabelled_then_proposed(project):
    example = make_example(project)
    assert current(example) == (None, "unlabelled")
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value="Billing", confidence=0.9)
    assert current(example) == ("Billing", "proposed")


def test_latest_valid_proposal_wins_and_errors_and_students_do_not_count(project):
    example = make_example(project)
    Proposal.objects.create(example=example, agent="import", value="Other")
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value="Billing")
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v2", value=None, error="not JSON")
    Proposal.objects.create(
        example=example, agent="student:run-3", value="Technical support", confidence=0.99
    )
    assert current(example) == ("Billing", "proposed")


def test_review_beats_proposal_and_latest_review_wins(project, reviewer, lead):
    example = make_example(project)
    proposal = Proposal.objects.create(example=example, agent="teacher:m:p1", value="Billing")
    Review.objects.create(
        example=example, reviewer=reviewer, proposal=proposal, verdict="correct", value="Other"
    )
    assert current(example) == ("Other", "reviewed")
    Review.objects.create(
        example=example, reviewer=lead, proposal=proposal, verdict="accept", value="Billing"
    )
    assert current(example) == ("Billing", "reviewed")
    # A newer proposal does not override a human verdict.
    Proposal.objects.create(example=example, agent="teacher:m:p2", value="Technical support")
    assert current(example) == ("Billing", "reviewed")


def test_reject_means_no_usable_label(project, reviewer):
    example = make_example(project)
    Proposal.objects.create(example=example, agent="teacher:m:p1", value="Billing")
    Review.objects.create(example=example, reviewer=reviewer, verdict="reject", value=None)
    assert current(example) == (None, "rejected")


def test_adjudication_beats_a_later_review_and_blind_labels_wait(project, reviewer, lead):
    example = make_example(project)
    Review.objects.create(example=example, reviewer=reviewer, kind="blind", verdict="correct", value="Other")
    assert current(example) == (None, "unlabelled")
    Review.objects.create(
        example=example, reviewer=lead, kind="adjudication", verdict="correct", value="Billing"
    )
    Review.objects.create(example=example, reviewer=reviewer, verdict="correct", value="Other")
    assert current(example) == ("Billing", "reviewed")


def test_current_label_can_be_filtered_in_sql(project, reviewer):
    billing, other, rejected = (make_example(project, t) for t in ("a", "b", "c"))
    Proposal.objects.create(example=billing, agent="import", value="Billing")
    Proposal.objects.create(example=other, agent="import", value="Billing")
    Review.objects.create(example=other, reviewer=reviewer, verdict="correct", value="Other")
    Review.objects.create(example=rejected, reviewer=reviewer, verdict="reject")
    labelled = Example.objects.for_project(project).with_current_label()
    assert set(labelled.filter(current_label="Billing").values_list("pk", flat=True)) == {billing.pk}
    assert set(labelled.filter(label_state="rejected").values_list("pk", flat=True)) == {rejected.pk}


def test_not_gold_excludes_flagged_and_gold_set_examples(project):
    plain = make_example(project, "plain")
    flagged = make_example(project, "flagged", is_gold=True)
    in_set = make_example(project, "in a gold set")
    gold = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=gold, example=in_set, answer="Billing")
    assert list(Example.objects.for_project(project).not_gold()) == [plain]
    assert flagged not in Example.objects.not_gold()


def test_frozen_gold_set_never_changes(project, lead):
    example = make_example(project)
    other = make_example(project, "another")
    gold = GoldSet.objects.create(project=project, version=1)
    item = GoldSetItem.objects.create(gold_set=gold, example=example, answer="Billing")
    gold.freeze(user=lead)
    gold.refresh_from_db()
    assert gold.is_frozen and gold.frozen_by == lead

    item.answer = "Other"
    with pytest.raises(FrozenGoldSetError):
        item.save()
    with pytest.raises(FrozenGoldSetError):
        item.delete()
    with pytest.raises(FrozenGoldSetError):
        GoldSetItem.objects.create(gold_set=gold, example=other, answer="Other")
    with pytest.raises(FrozenGoldSetError):
        GoldSetItem.objects.filter(gold_set=gold).update(answer="Other")
    with pytest.raises(FrozenGoldSetError):
        GoldSetItem.objects.filter(gold_set=gold).delete()
    gold.note = "edited"
    with pytest.raises(FrozenGoldSetError):
        gold.save()
    with pytest.raises(FrozenGoldSetError):
        gold.delete()
    with pytest.raises(FrozenGoldSetError):
        gold.freeze(user=lead)
    assert GoldSetItem.objects.get(pk=item.pk).answer == "Billing"

    # A new version can be frozen later.
    v2 = GoldSet.objects.create(project=project, version=2)
    GoldSetItem.objects.create(gold_set=v2, example=other, answer="Other")
    v2.freeze(user=lead)
    assert GoldSet.objects.filter(project=project, frozen_at__isnull=False).count() == 2


def test_proposal_confidence_must_be_a_probability(project):
    from django.db import IntegrityError, transaction

    example = make_example(project)
    with pytest.raises(IntegrityError), transaction.atomic():
        Proposal.objects.create(example=example, agent="teacher:x", value="Billing", confidence=1.5)


def test_new_teacher_answers_set_the_queue_keys(project):
    agrees = make_example(project, "one", student_label="Billing")
    disagrees = make_example(project, "two", student_label="Billing")
    no_student = make_example(project, "three")
    untouched = make_example(project, "four", teacher_label="Other", teacher_confidence=0.3)
    changed = Example.objects.note_teacher_answers(
        {agrees.pk: ("Billing", 0.9), disagrees.pk: ("Other", None), no_student.pk: ("Other", 0.5)}
    )
    assert changed == 3
    rows = {
        e.pk: (e.teacher_label, e.teacher_confidence, e.is_disagreement)
        for e in Example.objects.filter(project=project)
    }
    assert rows[agrees.pk] == ("Billing", 0.9, False)
    assert rows[disagrees.pk] == ("Other", None, True)
    assert rows[no_student.pk] == ("Other", 0.5, False)
    assert rows[untouched.pk] == ("Other", 0.3, False)
    # The same keys as re-deriving everything from the proposals would give.
    for example in (agrees, disagrees):
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=rows[example.pk][0])
        Proposal.objects.create(example=example, agent="student:run-1", value="Billing", confidence=0.8)
    Example.objects.filter(pk__in=[agrees.pk, disagrees.pk]).sync_queue_fields()
    assert Example.objects.get(pk=agrees.pk).is_disagreement is False
    assert Example.objects.get(pk=disagrees.pk).is_disagreement is True
