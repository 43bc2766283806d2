"""#26: where the teacher's located values sit outside labelling jobs and imports. The task is
primed with reviewed, never gold, answers; the serving fallback keeps its primed task until
the reviews or the prompt's fields change; fixed few-shot replies are read primed too."""

from __future__ import annotations

import json

import pytest

from annotation import projects, teacher
from annotation.models import Example, Review
from annotation.teacher.service import primed_task

pytestmark = pytest.mark.django_db

RECEIPT = "Burger 12.50, the Total 12.50"
AFTER_TOTAL = (RECEIPT.rindex("12.50"), len(RECEIPT))
FIRST = (RECEIPT.index("12.50"), RECEIPT.index("12.50") + 5)


@pytest.fixture
def receipts(lead, reviewer):
    project = projects.project_create(
        name="Receipts",
        slug="receipts",
        user=lead,
        task_type="extraction",
        labels=[("total", "The sum paid")],
    )
    for text in ("Fries 3.00 Total 3.00", "Soup 4.10 Tax 0.40 Total 4.50"):
        start = text.rindex(" ") + 1
        total = {"spans": [{"start": start, "end": len(text), "field": "total"}]}
        example = Example.objects.create(project=project, text=text)
        Review.objects.create(
            example=example, reviewer=reviewer, kind="review", verdict="correct", value=total
        )
    return project


def placed(task, field: str = "total") -> list[tuple[int, int]]:
    reply = json.dumps({"entities": [{"field": field, "text": "12.50"}]})
    answer, why = task.parse_teacher(reply, text=RECEIPT)
    assert answer is not None, why
    return [(s["start"], s["end"]) for s in answer["spans"]]


def test_gold_answers_never_teach_the_teacher_where_values_sit(receipts):
    assert placed(receipts.primed()) == [AFTER_TOTAL]
    Example.objects.filter(project=receipts).update(is_gold=True)
    # Measured on gold, the teacher must not have learnt from the gold answers themselves.
    assert placed(receipts.primed()) == [FIRST]


def test_the_fallbacks_primed_task_follows_a_renamed_field(receipts, lead):
    prompt = teacher.prompt_version_current(receipts)
    assert placed(primed_task(receipts, prompt)) == [AFTER_TOTAL]
    projects.label_update(label=receipts.labels.get(), name="amount", description="", key="", order=1)
    receipts.forget_task()
    prompt = teacher.prompt_version_current(receipts)
    # The same reviews, renamed in place: the kept task must not answer with the old field.
    assert placed(primed_task(receipts, prompt), "amount") == [AFTER_TOTAL]


def test_a_fixed_examples_reply_is_read_primed(receipts, lead):
    prompt = teacher.prompt_version_update(
        project=receipts,
        user=lead,
        instructions="",
        few_shot="fixed",
        few_shot_k=8,
        few_shot_per_label=2,
        fixed_examples=[{"text": RECEIPT, "reply": {"entities": [{"field": "total", "text": "12.50"}]}}],
    )
    [example] = prompt.fixed_examples
    assert [(s["start"], s["end"]) for s in example["label"]["spans"]] == [AFTER_TOTAL]
