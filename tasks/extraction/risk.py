"""Where a teacher's spans look wrong: what the student says against them, and placements
that could have been elsewhere. The review queue's "disagreement" order serves the highest
risk first (``ExtractionTask.review_risk``).

Each sign is a kind and a strength in [0, 1]; a text's risk is the strongest sign, its
kind's weight times its strength:

- ``missed``: the student marks a span no teacher span overlaps (the teacher left a value
  out), as strong as the student's confidence in that span;
- ``boundary``: a student span overlaps a teacher span of its field with other ends;
- ``field``: a student span has a teacher span's ends but another field;
- ``ambiguous``: a teacher span's value occurs again in the text (whole words) where no span
  of its field is, so it could sit at the other place (a located value pinned to one);
- ``unconfirmed``: a teacher span the student marks nothing over (spurious, or the student
  missed it).

Measured: bench/README.md, section "Review budget, extraction".
"""

from __future__ import annotations

from collections.abc import Mapping

from tasks.extraction.spans import occurrences

WEIGHTS = {"missed": 1.0, "ambiguous": 0.9, "boundary": 0.8, "field": 0.8, "unconfirmed": 0.4}
# A student span without a confidence (an imported answer) counts as this sure.
UNKNOWN_CONFIDENCE = 0.5


def _overlaps(a: Mapping, b: Mapping) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def _confidence(span: Mapping) -> float:
    value = span.get("confidence")
    return UNKNOWN_CONFIDENCE if value is None else max(0.0, min(1.0, float(value)))


def ambiguous_spans(text: str, spans: list[Mapping]) -> list[Mapping]:
    """The spans whose value occurs again in the text (on word boundaries, same case) where no
    span of the same field sits: the placement was a choice between occurrences."""
    out = []
    for span in spans:
        value = text[span["start"] : span["end"]]
        taken = [s for s in spans if s["field"] == span["field"]]
        others = [
            (s, e)
            for s, e in occurrences(text, value)
            if (s, e) != (span["start"], span["end"])
            and text[s:e] == value
            and not any(_overlaps({"start": s, "end": e}, t) for t in taken)
        ]
        if others:
            out.append(span)
    return out


def signs(teacher: Mapping | None, student: Mapping | None, *, text: str) -> list[tuple[str, float]]:
    """Every (kind, strength) sign against the teacher's spans (see the module docstring)."""
    if teacher is None:
        return []
    given = list(teacher.get("spans", []))
    found: list[tuple[str, float]] = [("ambiguous", 1.0) for _ in ambiguous_spans(text, given)]
    if student is None:
        return found
    predicted = list(student.get("spans", []))
    for span in predicted:
        over = [t for t in given if _overlaps(span, t)]
        if not over:
            found.append(("missed", _confidence(span)))
        elif any((t["start"], t["end"]) == (span["start"], span["end"]) for t in over):
            if not any(
                (t["start"], t["end"], t["field"]) == (span["start"], span["end"], span["field"])
                for t in over
            ):
                found.append(("field", _confidence(span)))
        elif any(t["field"] == span["field"] for t in over):
            found.append(("boundary", _confidence(span)))
        else:
            found.append(("field", _confidence(span)))
    found += [("unconfirmed", 1.0) for span in given if not any(_overlaps(span, s) for s in predicted)]
    return found


def review_risk(teacher: Mapping | None, student: Mapping | None, *, text: str) -> float:
    """The strongest sign's weight times its strength, in [0, 1]; 0 with no sign."""
    return max(
        (WEIGHTS[kind] * strength for kind, strength in signs(teacher, student, text=text)), default=0.0
    )


# The kinds of error a reviewer's spans show in the teacher's (``error_kinds``).
ERROR_KINDS = {
    "missed": "a value the teacher left out",
    "boundary": "a value the teacher marked with other ends",
    "wrong_field": "a value the teacher gave another field",
    "spurious": "a span the teacher marked where there is no value",
}


def error_kinds(truth: list[Mapping], given: list[Mapping]) -> dict[str, int]:
    """How many errors of each kind the `given` spans hold against the `truth` spans."""
    counts = dict.fromkeys(ERROR_KINDS, 0)
    for span in truth:
        over = [s for s in given if _overlaps(s, span)]
        if not over:
            counts["missed"] += 1
        elif any(
            (s["start"], s["end"], s["field"]) == (span["start"], span["end"], span["field"]) for s in over
        ):
            continue
        elif any((s["start"], s["end"]) == (span["start"], span["end"]) for s in over):
            counts["wrong_field"] += 1
        else:
            counts["boundary"] += 1
    counts["spurious"] = sum(not any(_overlaps(s, t) for t in truth) for s in given)
    return counts
