"""Blind A/B preference: reviewers judge the student's answer against the teacher's on gold texts.

Where an overlap metric says little (two good summaries share few words), people decide. The
pair is shown in an order drawn per reviewer and text, never said; the win rate is the
student's wins over the decided votes ("same" left out), with a Wilson interval.
"""

from __future__ import annotations

import hashlib

from django.db import IntegrityError, transaction

from annotation.models import Example
from tasks.stats import wilson_interval
from training.models import Evaluation, PreferenceVote
from training.services.evaluation import latest_teacher_evaluation

PICKS = ("a", "b", "same")


class PreferenceError(ValueError):
    """A vote that cannot be recorded, with a message for the reviewer."""


def student_shown_first(*, user_id: int, example_id: int) -> bool:
    """The side the student's answer takes for this reviewer and text: drawn once, from a hash,
    so a reload shows the same order and the server never trusts the page to say it."""
    digest = hashlib.sha256(f"{user_id}:{example_id}".encode()).digest()
    return digest[0] % 2 == 0


def preference_pairs(evaluation: Evaluation) -> dict[int, tuple]:
    """example id -> (student answer, teacher answer) where both answered the gold text."""
    teacher = latest_teacher_evaluation(evaluation)
    if teacher is None:
        return {}
    theirs = {r["example"]: r["predicted"] for r in teacher.predictions if r.get("predicted") is not None}
    return {
        r["example"]: (r["predicted"], theirs[r["example"]])
        for r in evaluation.predictions
        if r.get("predicted") is not None and r["example"] in theirs
    }


def preference_next(*, evaluation: Evaluation, user) -> dict | None:
    """The next pair for this reviewer, in a fixed random order, or None when all are judged."""
    pairs = preference_pairs(evaluation)
    done = set(
        PreferenceVote.objects.filter(evaluation=evaluation, reviewer=user).values_list(
            "example_id", flat=True
        )
    )
    waiting = sorted(
        (pk for pk in pairs if pk not in done),
        key=lambda pk: hashlib.sha256(f"order:{user.pk}:{pk}".encode()).hexdigest(),
    )
    if not waiting:
        return None
    example = Example.objects.get(pk=waiting[0])
    student, teacher = pairs[example.pk]
    first = student_shown_first(user_id=user.pk, example_id=example.pk)
    return {
        "example": example,
        "a": student if first else teacher,
        "b": teacher if first else student,
        "left": len(waiting),
        "total": len(pairs),
    }


def preference_record(*, evaluation: Evaluation, example_id: int, user, pick: str) -> PreferenceVote:
    """One vote: ``pick`` is what the reviewer saw ("a", "b" or "same"), decoded here."""
    if pick not in PICKS:
        raise PreferenceError("Pick A, B or Same.")
    if example_id not in preference_pairs(evaluation):
        raise PreferenceError("That text has no pair to judge in this evaluation.")
    first = student_shown_first(user_id=user.pk, example_id=example_id)
    choice = (
        PreferenceVote.Choice.SAME
        if pick == "same"
        else PreferenceVote.Choice.STUDENT
        if (pick == "a") == first
        else PreferenceVote.Choice.TEACHER
    )
    try:
        with transaction.atomic():
            return PreferenceVote.objects.create(
                evaluation=evaluation,
                example_id=example_id,
                reviewer=user,
                student_first=first,
                choice=choice,
            )
    except IntegrityError:
        raise PreferenceError("You already judged this pair.") from None


def preference_summary(evaluation: Evaluation) -> dict:
    """Votes so far: the student's wins, losses and ties, and its win rate over decided votes."""
    votes = list(PreferenceVote.objects.filter(evaluation=evaluation).values_list("choice", flat=True))
    wins = votes.count(PreferenceVote.Choice.STUDENT)
    losses = votes.count(PreferenceVote.Choice.TEACHER)
    decided = wins + losses
    return {
        "votes": len(votes),
        "wins": wins,
        "losses": losses,
        "same": votes.count(PreferenceVote.Choice.SAME),
        "win_rate": wins / decided if decided else None,
        "interval": wilson_interval(wins, decided),
        "pairs": len(preference_pairs(evaluation)),
    }
