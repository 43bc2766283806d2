"""Exports: which examples go out, one record each with its provenance, and the files they make.

`examples_for_export` chooses (all, reviewed, or a frozen gold version; gold only in the
last), `export_records`
turns each example into a plain dict, and `iter_export` / `write_export` write those
records as CSV or JSONL (the task writes the formats beyond those, extraction's CoNLL). The cell guard the CSV writer applies lives in
`formats`, which undoes it when an export is imported again.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from django.db.models import Prefetch, QuerySet

from annotation.corpus.formats import CorpusFormatError, neutralise_cell
from annotation.models import Example, GoldSet, GoldSetItem, Project, Proposal, Review
from annotation.projects import ServiceError

EXPORT_SCOPES = ("all", "reviewed", "gold")


def examples_for_export(
    *, project: Project, scope: str = "all", gold_version: int | None = None
) -> tuple[QuerySet, GoldSet | None]:
    if scope not in EXPORT_SCOPES:
        raise ServiceError(f"Unknown export scope {scope!r}; use one of {', '.join(EXPORT_SCOPES)}.")
    examples = Example.objects.for_project(project).with_current_label()
    gold_set = None
    if scope == "gold":
        gold_set = project.gold_sets.frozen_version(gold_version)
        if gold_set is None:
            which = f"version {gold_version}" if gold_version is not None else "version"
            raise ServiceError(f"This project has no frozen gold set {which}.")
        examples = examples.filter(gold_items__gold_set=gold_set)
    else:
        # Gold leaves only through its own export: a training set built from "everything" or
        # "reviewed" would otherwise hold the examples it is measured on.
        examples = without_gold(examples, project=project)
        if scope == "reviewed":
            examples = examples.exclude(label_state__in=["proposed", "unlabelled"])
    examples = examples.prefetch_related(
        Prefetch("proposals", queryset=Proposal.objects.order_by("created_at", "pk")),
        Prefetch(
            "reviews",
            queryset=Review.objects.select_related("reviewer").order_by("created_at", "pk"),
        ),
        Prefetch("gold_items", queryset=GoldSetItem.objects.select_related("gold_set")),
    ).order_by("pk")
    return examples, gold_set


def without_gold(examples: QuerySet, *, project: Project) -> QuerySet:
    """The examples of no gold set (drafts included), whether or not they are flagged gold."""
    in_gold = GoldSetItem.objects.filter(gold_set__project=project).values("example_id")
    return examples.filter(is_gold=False).exclude(pk__in=in_gold)


def gold_left_out(project: Project) -> int:
    """How many examples an export other than the gold export leaves out, to say so."""
    examples = Example.objects.for_project(project)
    return examples.count() - without_gold(examples, project=project).count()


def export_records(examples: QuerySet, *, gold_set: GoldSet | None = None) -> Iterator[dict]:
    """One plain dict per example: current label plus its provenance.

    An item of a gold set still being labelled shows no answer at all (no label,
    proposals or reviews): another reviewer's blind label, an adjudication or the
    teacher's proposal would anchor whoever reads the export and break the
    blind double labelling. Its provenance is exported once the version is frozen.
    """
    for example in examples.iterator(chunk_size=2000):
        in_draft = any(not i.gold_set.is_frozen for i in example.gold_items.all())
        proposals = [] if in_draft else list(example.proposals.all())
        reviews = [] if in_draft else list(example.reviews.all())
        valid = [p for p in proposals if p.is_valid]
        latest = valid[-1] if valid else None
        gold_items = [i for i in example.gold_items.all() if i.gold_set.is_frozen]
        label = None if in_draft else example.current_label
        if gold_set is not None:
            label = next((i.answer for i in gold_items if i.gold_set_id == gold_set.pk), label)
        state = "gold" if gold_set is not None else "gold_draft" if in_draft else example.label_state
        yield {
            "example_id": example.pk,
            "id": example.external_id,
            "text": example.text,
            "label": label,
            "label_state": state,
            "source": example.source,
            "is_gold": example.is_gold or bool(gold_items),
            "gold_versions": sorted(i.gold_set.version for i in gold_items),
            "metadata": example.metadata,
            "provenance": {
                "latest_proposal": _proposal_record(latest) if latest else None,
                "proposals": [_proposal_record(p) for p in proposals],
                "reviews": [
                    {
                        "reviewer": r.reviewer.get_username(),
                        "kind": r.kind,
                        "verdict": r.verdict,
                        "value": r.value,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in reviews
                ],
                # The file keeps its "label" key (an export format other tools read).
                "gold": [{"version": i.gold_set.version, "label": i.answer} for i in gold_items],
            },
        }


def _proposal_record(p: Proposal) -> dict:
    return {
        "agent": p.agent,
        "value": p.value,
        "confidence": p.confidence,
        "error": p.error,
        # A plain decimal ("0", "0.000123"), never Decimal's "0E-8".
        "cost_usd": format(p.cost_usd.normalize(), "f"),
        "created_at": p.created_at.isoformat(),
    }


# --- files ---------------------------------------------------------------------------

CSV_EXPORT_COLUMNS = [
    "example_id",
    "id",
    "text",
    "label",
    "label_state",
    "source",
    "is_gold",
    "gold_versions",
    "proposed_by",
    "proposed_label",
    "proposed_confidence",
    "reviews",
    "metadata",
]


def _flat(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Echo:
    def write(self, value: str) -> str:
        return value


def iter_csv(records: Iterable[dict], *, task=None) -> Iterator[str]:
    """CSV text, one chunk per row, for streaming responses and files; the label cell is the
    answer in the task's file form (a summary's text), so the file imports again."""
    label = task.file_label if task is not None else (lambda answer: answer)
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_EXPORT_COLUMNS)
    for record in records:
        proposal = record["provenance"]["latest_proposal"] or {}
        # "accept:ana:Billing"; blind gold labels and adjudications name their kind instead.
        reviews = "; ".join(
            f"{r['verdict'] if r['kind'] == 'review' else r['kind']}:{r['reviewer']}:{_flat(r['value'])}"
            for r in record["provenance"]["reviews"]
        )
        yield writer.writerow(
            neutralise_cell(str(cell))
            for cell in [
                record["example_id"],
                record["id"],
                record["text"],
                _flat(label(record["label"])),
                record["label_state"],
                record["source"],
                "true" if record["is_gold"] else "false",
                " ".join(str(v) for v in record["gold_versions"]),
                proposal.get("agent", ""),
                _flat(label(proposal.get("value"))),
                "" if proposal.get("confidence") is None else f"{proposal['confidence']:.4f}",
                reviews,
                json.dumps(record["metadata"], ensure_ascii=False) if record["metadata"] else "",
            ]
        )


def iter_jsonl(records: Iterable[dict], *, task=None) -> Iterator[str]:
    """One JSON line per record; the task writes its label in its file form (``file_record``)."""
    for record in records:
        line = task.file_record(record) if task is not None else record
        yield json.dumps(line, ensure_ascii=False, default=str) + "\n"


EXPORT_CONTENT_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson", "conll": "text/plain"}


def iter_export(records: Iterable[dict], *, fmt: str, task) -> Iterator[str]:
    """Export chunks in one of the task's export formats."""
    if fmt not in task.export_formats:
        raise CorpusFormatError(
            f"A {task.title.lower()} project exports {' or '.join(task.export_formats)}, not {fmt}."
        )
    if fmt == "csv":
        return iter_csv(records, task=task)
    if fmt == "jsonl":
        return iter_jsonl(records, task=task)
    return task.write_file(fmt, records)


def write_export(records: Iterable[dict], *, fmt: str, out: io.TextIOBase, task=None) -> int:
    """Write an export; returns how many examples (CoNLL: labelled sentences) it holds."""
    chunks = iter_export(records, fmt=fmt, task=task) if task is not None else None
    if chunks is None:
        chunks = iter_csv(records) if fmt == "csv" else iter_jsonl(records)
    count = -1 if fmt == "csv" else 0
    for chunk in chunks:
        out.write(chunk)
        count += 1
    return count
