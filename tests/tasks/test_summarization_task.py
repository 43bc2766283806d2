"""The summarisation task's own rules: target and style in the prompt, confidences, disagreement, grounding scores."""

from __future__ import annotations

import json
import math

import pytest

from tasks import AnswerError, task_for

TEXT = "Agent: Hello.\nCustomer: Order 4417 was charged twice, $42.50 each, on 12 May.\nAgent: Refunded."


def calls(**options):
    return task_for("summarization", [], options)


def test_the_prompt_asks_for_the_target_length_and_the_style():
    task = calls(target_unit="words", target_length=25, style="For the **billing** team.")
    block = task.prompt_block()
    assert "at most 25 words" in block and "For the **billing** team." in block
    assert calls(target_length=1).target_words() == "1 sentence"


def test_ratings_are_whole_numbers_from_one_to_five():
    task = calls()
    assert task.validate({"summary": " A  refund. ", "rating": "4"}) == {"summary": "A refund.", "rating": 4}
    for bad in (0, 6, 3.5, True, "x"):
        with pytest.raises(AnswerError):
            task.validate({"summary": "A refund.", "rating": bad})


def test_logprob_confidence_reads_only_the_summary_tokens():
    task = calls()
    content = '{"summary": "Refund sent."}'
    tokens = [
        ('{"', 0.0),
        ("summary", 0.0),
        ('": "', 0.0),
        ("Ref", math.log(0.5)),
        ("und", math.log(0.5)),
        (" sent.", math.log(0.5)),
        ('"}', 0.0),
    ]
    value, confidence = task.logprob_answer(content, task.validate({"summary": "Refund sent."}), tokens)
    assert value == {"summary": "Refund sent."} and confidence == pytest.approx(0.5)
    assert task.logprob_answer(content, value, [])[1] is None


def test_self_consistency_takes_the_central_sample_and_their_mean_rouge_l():
    task = calls()
    samples = [
        {"summary": "The customer was charged twice and refunded."},
        {"summary": "The customer was charged twice and got a refund."},
        {"summary": "Weather is nice."},
    ]
    value, confidence = task.consistency_answer(samples[2], samples)
    assert value == samples[0] or value == samples[1]
    assert 0 < confidence < 1
    same, full = task.consistency_answer(samples[0], [samples[0], samples[0]])
    assert full == pytest.approx(1.0)


def test_teacher_and_student_disagree_below_the_rouge_floor():
    task = calls()
    a = {"summary": "Order 4417 was charged twice and refunded."}
    assert not task.disagree(a, {"summary": "Order 4417 was charged twice; it was refunded."})
    assert task.disagree(a, {"summary": "A customer asked about opening hours."})


def test_made_up_numbers_and_names_score_as_likely_errors():
    task = calls()
    answers = [
        {"summary": "Order 4417 was charged twice and refunded."},
        {"summary": "Order 9999 for Maria was refunded $80."},
    ]
    scores = task.label_quality_scores([TEXT, TEXT], answers)
    assert scores[0] == 1.0 and scores[1] < 0.5
    context = task.review_context(TEXT, answers[1])
    assert {u["text"] for u in context["unsupported"]} >= {"9999", "Maria"}


def test_the_drop_in_answers_the_summary_as_the_message():
    task = calls()
    answer = {"summary": "Refund sent."}
    assert task.drop_in_content(answer, text=TEXT) == "Refund sent."
    assert json.loads(task.drop_in_content(answer, text=TEXT, wants_json=True)) == {"summary": "Refund sent."}
    assert task.served(None, text=TEXT) == {"summary": None}
