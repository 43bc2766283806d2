"""The three demo projects as a lead finds them after a first pass of the loop (issue #24 item 10):
teacher answers, blind gold labels with agreement, an evaluated quick run per project type
that has one, a live version with traffic on the tickets, and the bookings and call notes
with nothing deployed. Built from services and metric functions, never by training, so the
pages can be read in Chromium in seconds."""

from __future__ import annotations

import io
import random

from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotation import review
from annotation.models import Example, Project, Proposal
from training.models import Evaluation, ModelVersion, PredictionLog, TrainingRun

PASSWORD = "a-long-password"
SLUGS = ["support-tickets", "table-bookings", "call-notes"]


def _answers(project: Project) -> dict[int, object]:
    """Each example's current answer (reviewed or proposed), by id."""
    return {
        pk: value
        for pk, value in Example.objects.for_project(project)
        .with_current_label()
        .exclude(current_label=None)
        .values_list("pk", "current_label")
    }


def _blind_gold(project: Project, users, answers: dict, *, size: int = 6) -> None:
    """A gold draft labelled blind by two reviewers who disagree once, adjudicated and frozen."""
    gold = review.gold_draw(project=project, size=size, seed=1)
    items = list(gold.items.select_related("example").order_by("pk"))
    task = project.task
    for i, item in enumerate(items):
        value = answers.get(item.example_id)
        if value is None:
            value = task.validate(_blank(task), text=item.example.text)
        other = value
        if i == 0:  # the second reviewer answers otherwise once
            if isinstance(value, str):
                other = next(n for n in task.names if n != value)
            elif isinstance(value, dict) and value.get("spans"):
                other = {**value, "spans": value["spans"][:-1]}
            elif isinstance(value, dict) and "summary" in value:
                other = {**value, "summary": value["summary"].split(".")[0] + "."}
        review.gold_label_blind(gold_set=gold, example=item.example, user=users[0], value=value)
        review.gold_label_blind(gold_set=gold, example=item.example, user=users[1], value=other)
        if other != value:
            review.gold_adjudicate(gold_set=gold, example=item.example, user=users[0], value=value)
    review.gold_freeze(gold_set=gold, user=users[0])
    # The next version being labelled: blind answers in, agreement on the gold page.
    draft = review.gold_draw(project=project, size=4, seed=2)
    for i, item in enumerate(draft.items.select_related("example").order_by("pk")):
        value = answers.get(item.example_id) or task.validate(_blank(task), text=item.example.text)
        other = value
        if i == 0 and isinstance(value, dict) and value.get("spans"):
            other = {**value, "spans": value["spans"][1:]}
        elif i == 0 and isinstance(value, str):
            other = next(n for n in task.names if n != value)
        review.gold_label_blind(gold_set=draft, example=item.example, user=users[0], value=value)
        review.gold_label_blind(gold_set=draft, example=item.example, user=users[1], value=other)


def _blank(task):
    return {"spans": []} if task.type == "extraction" else {"summary": "Nothing to note."}


def _evaluate(project: Project, run: TrainingRun | None, subject: str, rng: random.Random, *, right: float):
    """An evaluation on the latest frozen gold, from the gold answers with some made wrong."""
    gold = project.gold_sets.frozen_version()
    task = project.task
    items = [i for i in gold.items.select_related("example") if i.answer is not None]
    golds = [i.answer for i in items]
    texts = [i.example.text for i in items]
    wrong = [i.answer for i in reversed(items)]  # another item's answer: wrong unless equal
    preds = [g if rng.random() < right else w for g, w in zip(golds, wrong, strict=True)]
    confs = [rng.uniform(0.3, 1.0) for _ in golds]
    metrics = task.metrics(golds, preds, texts=texts, confidences=confs, target_accuracy=0.95)
    metrics["answered"] = len(preds)
    return Evaluation.objects.create(
        project=project,
        run=run,
        gold_set=gold,
        subject=subject,
        agent=run.agent if run else "teacher:offline:prompt-v1",
        target_accuracy=0.95,
        metrics=metrics,
        predictions=[
            {
                "example": i.example_id,
                "gold": g,
                "predicted": p,
                "confidence": c,
                "right": task.is_right(g, p),
                "source": "imported",
                "length": len(t),
            }
            for i, g, p, c, t in zip(items, golds, preds, confs, texts, strict=True)
        ],
    )


def build(monkeypatch, tmp_path) -> dict:
    monkeypatch.setenv("DEMO_PASSWORD", PASSWORD)
    call_command("seed_demo", stdout=io.StringIO())
    rng = random.Random(24)
    users = [get_user_model().objects.get(username=n) for n in ("demo", "reviewer")]
    state = {}
    for slug in SLUGS:
        project = Project.objects.get(slug=slug)
        task = project.task
        if slug == "support-tickets":  # the teacher's answers, with their confidences
            Proposal.objects.bulk_create(
                Proposal(
                    example=e,
                    agent="teacher:offline:prompt-v1",
                    value=rng.choice(task.names),
                    confidence=rng.random(),
                )
                for e in Example.objects.filter(project=project)
            )
            Example.objects.filter(project=project).sync_queue_fields()
        if slug == "table-bookings":  # the offline dictionary teacher, from the reviewed requests
            call_command("label", "--project", slug, "--teacher", "offline", "--wait", stdout=io.StringIO())
        answers = _answers(project)
        _blind_gold(project, users, answers)
        kind = "quick" if "quick" in task.student_kinds else "finetune"
        hp = {"epochs": 4, "learning_rate": 3e-4, "batch_size": 16, "max_length": 64}
        if kind == "quick":
            hp = {"C": 10.0, "max_length": 128, "seed": 42, "validation_fraction": 0.05}
        run = TrainingRun.objects.create(
            project=project,
            number=1,
            kind=kind,
            status="succeeded",
            device="cpu",
            artifact_path=str(tmp_path / slug),
            hyperparameters=hp,
            train_seconds=17.4,
            counts={"train": 120, "validation": 6, "per_label": task.category_counts(list(answers.values()))},
            loss_history=[[s, 1.1 * 0.93**s] for s in range(0, 40, 2)],
        )
        evaluation = _evaluate(project, run, "student", rng, right=0.8)
        _evaluate(project, None, "teacher", rng, right=0.7)
        state[slug] = {"project": project, "run": run, "evaluation": evaluation}
    tickets = state["support-tickets"]
    version = ModelVersion.objects.create(
        project=tickets["project"], run=tickets["run"], threshold=0.6, is_active=True
    )
    labels = tickets["project"].task.names
    PredictionLog.objects.bulk_create(
        PredictionLog(
            project=tickets["project"],
            version=version,
            route=rng.choice(["student", "student", "teacher", "review"]),
            answer_summary=rng.choice(labels),
            student_answer_summary=rng.choice(labels),
            confidence=rng.uniform(0.3, 1.0),
            latency_ms=rng.gauss(12, 2),
        )
        for _ in range(200)
    )
    return state


def lead_urls(state: dict) -> list[str]:
    """The evaluation, review, gold, training-run, deploy, monitor and cost pages of each project."""
    from django.urls import reverse

    urls = []
    for slug, s in state.items():
        urls += [
            reverse("annotation:project-detail", args=[slug]),
            reverse("annotation:review", args=[slug]),
            reverse("annotation:gold", args=[slug]),
            reverse("training:runs", args=[slug]),
            reverse("training:run", args=[slug, s["run"].number]),
            reverse("training:evaluation", args=[slug, s["evaluation"].pk]),
            reverse("training:deploy", args=[slug]),
            reverse("training:monitor", args=[slug]),
            reverse("training:cost", args=[slug]),
        ]
    return urls
