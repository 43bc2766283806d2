"""The extraction data of bench/review_bench.py (``--task extraction``): synthetic booking
requests with their true spans, a simulated teacher and student, and each row's queue fields
worked out by the project's task as ExampleQuerySet.sync_queue_fields() does.

Standard library only at import time (the bench's parent process imports nothing else).
"""

from __future__ import annotations

import json
import random
import re

FIELDS = [
    ("date", "The day of the booking"),
    ("time", "The time of the booking"),
    ("people", "How many guests"),
    ("name", "Who booked"),
]
VALUES = {
    "date": [
        "12 May", "Friday", "tomorrow", "next Tuesday", "3rd of June", "Saturday", "the 21st",
        "Sunday", "14 March", "this weekend", "New Year's Eve", "Monday the 4th",
    ],
    "time": ["19:30", "7pm", "8 o'clock", "noon", "half past six", "20:00", "lunchtime", "9.15pm"],
    "people": ["2", "3", "4", "5", "6", "8", "two", "four", "ten", "a dozen"],
    "name": [
        "Ana Lopez", "Smith", "Jan Kowalski", "Okafor", "Mei Chen", "Garcia", "Olsen", "Dubois",
        "Priya Nair", "Murphy", "Rossi", "Tanaka",
    ],
}  # fmt: skip
TEMPLATES = [
    "Hi, could I book a table for {people} on {date} at {time}? The name is {name}.",
    "Table for {people}, {date} at {time} please. Under {name}.",
    "Do you have space {date} around {time} for {people} of us?",
    "This is {name}, I would like to reserve for {people} people {date}.",
    "Can we come {date} at {time}?",
    "Please cancel my booking for {date}, it was under {name}.",
    "Is there a table for {people} tonight? Thanks, {name}",
    "What time do you open on weekdays, and do you take card?",
    "We would like to move our reservation to {time} {date}.",
    "Booking for {name}: {people} adults and a high chair, {date}, around {time}.",
]
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# The simulated teacher drops a true span, moves its end over the next word, or gives it a
# field the text does not hold; the student (a fifth of the texts) drops or moves spans too.
TEACHER_MISS, TEACHER_SHIFT, TEACHER_FIELD = 0.08, 0.06, 0.03
STUDENT_MISS, STUDENT_SHIFT = 0.10, 0.05
STUDENT_SHARE = 0.2


def booking(rng: random.Random) -> tuple[str, list[dict]]:
    """A booking request and its true spans (sorted)."""
    template = rng.choice(TEMPLATES)
    parts, spans, at = [], [], 0
    for index, piece in enumerate(PLACEHOLDER.split(template)):
        if index % 2:  # a field's value
            value = rng.choice(VALUES[piece])
            spans.append({"start": at, "end": at + len(value), "field": piece})
            piece = value
        parts.append(piece)
        at += len(piece)
    return "".join(parts), spans


def _moved(text: str, span: dict) -> dict | None:
    """The span with its end moved over the next word, or None where punctuation or the end follows."""
    rest = text[span["end"] :]
    match = re.match(r"\s+\S+", rest)
    return {**span, "end": span["end"] + match.end()} if match else None


def _simulated(
    text: str, truth: list[dict], rng: random.Random, miss: float, shift: float, wrong: float
) -> dict:
    """An answer with per-span confidences (right spans lean sure, wrong ones less so)."""
    spans = []
    unused = [name for name, _ in FIELDS if name not in {s["field"] for s in truth}]
    for span in truth:
        draw = rng.random()
        if draw < miss:
            continue
        sure = 0.55 + 0.45 * rng.random() ** 0.5
        if draw < miss + shift:
            if (moved := _moved(text, span)) is not None:
                span, sure = moved, sure * 0.7
        elif draw < miss + shift + wrong and unused:
            span, sure = {**span, "field": unused.pop(rng.randrange(len(unused)))}, sure * 0.6
        spans.append({**span, "confidence": round(sure, 4)})
    spans.sort(key=lambda s: (s["start"], s["end"], s["field"]))
    return {"spans": spans}


def _confidence(answer: dict, rng: random.Random) -> float:
    """The text's confidence: its least sure span's (the app's logprob rule); no span: fairly sure."""
    return min((s["confidence"] for s in answer["spans"]), default=round(0.6 + 0.4 * rng.random(), 4))


def write_files(task, csv_path, rows_path, examples: int, seed: int) -> None:
    """The import file (id, text) and the proposals' file for COPY: one tab-separated line per
    text with the teacher's and the student's answers and the queue fields the task gives them
    (teacher_label, student_label: summaries cut to 100 characters; is_disagreement; risk)."""
    import csv

    rng = random.Random(seed)
    # The queue fields of a request and its answers, once: they are the same for the text with
    # its counter, which holds no value (about half the texts repeat one; the task's risk is
    # most of the time at 1M).
    known: dict[tuple, list[str]] = {}
    with (
        open(csv_path, "w", newline="", encoding="utf-8", buffering=1 << 20) as out,
        open(rows_path, "w", encoding="utf-8", buffering=1 << 20) as rows,
    ):
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        for n in range(1, examples + 1):
            body, truth = booking(rng)
            external_id = f"b{n:08d}"
            # The counter keeps every text unique; zero-padded, it never matches a value as a
            # whole word ("4" in "[#0000004]"), so it changes no answer, summary or risk.
            writer.writerow([external_id, f"{body} [#{n:07d}]"])
            teacher = _simulated(body, truth, rng, TEACHER_MISS, TEACHER_SHIFT, TEACHER_FIELD)
            student = None
            if rng.random() < STUDENT_SHARE:
                student = _simulated(body, truth, rng, STUDENT_MISS, STUDENT_SHIFT, 0.0)
            student_json = json.dumps(student) if student else r"\N"
            # The teacher's span confidences change none of the fields; the student's do (risk).
            key = (body, tuple((s["start"], s["end"], s["field"]) for s in teacher["spans"]), student_json)
            if (fields := known.get(key)) is None:
                if len(known) > 250_000:
                    known.clear()
                fields = known[key] = [
                    task.summary(teacher, text=body)[:100],
                    task.summary(student, text=body)[:100] if student else "",
                    "t" if student is not None and task.disagree(teacher, student) else "f",
                    repr(float(task.review_risk(teacher, student, text=body))),
                ]
            line = [
                external_id,
                json.dumps(teacher),
                repr(_confidence(teacher, rng)),
                student_json,
                repr(_confidence(student, rng)) if student else r"\N",
                *fields,
            ]
            rows.write("\t".join(_copy_text(v) for v in line) + "\n")


def _copy_text(value: str) -> str:
    """A value in COPY's text format (\\N stays the null marker)."""
    if value == r"\N":
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def edited(initial: dict | None, rng: random.Random) -> dict:
    """A reviewer's correction of the card's spans: one span removed, or a name marked where
    the teacher found nothing (the first word, a valid span of every text)."""
    spans = [dict(s) for s in (initial or {}).get("spans", [])]
    if spans:
        spans.pop(rng.randrange(len(spans)))
        return {"spans": spans}
    return {"spans": [{"start": 0, "end": 2, "field": "name"}]}
