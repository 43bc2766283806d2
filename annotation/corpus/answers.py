"""What an import's answers make: each row's answer checked against the project's labels and
its task (`FileAnswers`), the labels a file adds (`create_labels`) and the gold set a gold
import fills (`make_gold`). Called by `importing` inside the import's transaction."""

from __future__ import annotations

from django.utils import timezone

from annotation.corpus.formats import Row
from annotation.models import (
    Example,
    GoldSet,
    GoldSetItem,
    ImportBatch,
    Label,
    ReviewClaim,
    forget_decided,
    next_free_key,
)
from tasks.base import AnswerError, Category

MAX_NEW_LABELS = 500


def create_labels(project, new_labels: dict[str, int], *, colours: bool = False) -> int:
    """Add the file's new labels in order of first use; new extraction fields get a colour."""
    if not new_labels:
        return 0
    existing = list(project.labels.values_list("key", "order"))
    used_keys = {key for key, _ in existing if key}
    order = max((o for _, o in existing), default=0)
    palette = getattr(type(project.task), "PALETTE", ()) if colours else ()
    labels = []
    for index, name in enumerate(sorted(new_labels, key=new_labels.get), start=len(existing)):
        key = next_free_key(used_keys)
        used_keys.add(key)
        order += 1
        colour = palette[index % len(palette)] if palette else ""
        labels.append(Label(project=project, name=name, key=key, order=order, color=colour))
    Label.objects.bulk_create(labels)
    project.forget_task()
    return len(labels)


class FileAnswers:
    """Checks the answers a file gives: known categories (or new ones, when allowed), then the
    task's rules. A label column of answers gives its cell, which the task reads first."""

    def __init__(self, task, known: set[str], create: bool, new_labels: dict[str, int]):
        # new_labels: the import's new label names -> the line that first used each
        self.task, self.known, self.create, self.new_labels = task, known, create, new_labels

    def check(self, row: Row) -> str | None:
        if isinstance(row.answer, str):
            try:
                row.answer = self.task.column_answer(row.answer, text=row.text)
            except AnswerError as exc:
                return str(exc)
        unknown = sorted(self.task.answer_categories(row.answer) - self.known)
        if unknown and not self.create:
            return (
                f"unknown field {', '.join(map(repr, unknown))} (the project's fields: "
                f"{', '.join(sorted(self.known)) or 'none yet'}; allow creating labels to add it)"
            )
        too_long = [name for name in unknown if len(name) > 100]
        if too_long:
            return f"field name {too_long[0][:40]!r}… is longer than 100 characters"
        for name in unknown:
            self.new_labels.setdefault(name, row.line)
            if len(self.new_labels) > MAX_NEW_LABELS:
                return f"more than {MAX_NEW_LABELS} different fields; is this the right file?"
        if unknown:
            # New fields take the default rules (any number of values) until a lead edits them.
            self.known.update(unknown)
            self.task = type(self.task)(
                [*self.task.categories, *(Category(name=n) for n in unknown)], self.task.options
            )
        try:
            row.answer = self.task.validate(row.answer, text=row.text)
        except AnswerError as exc:
            return str(exc)
        return None


def make_gold(batch: ImportBatch, examples: list[tuple[int, object]], *, attested: bool) -> dict:
    """Put the file's examples into gold: the draft's candidates, or a new frozen version.

    Examples that were already in the project count too (a team's test set may
    overlap what was imported before); they leave training like any gold item.
    """
    from annotation.review import gold_draft

    project = batch.project
    if attested:
        latest = project.gold_sets.order_by("-version").first()
        now = timezone.now()
        gold_set = GoldSet.objects.create(
            project=project,
            version=(latest.version + 1) if latest else 1,
            note=f"Imported from {batch.file_name}; labels attested as verified by {batch.created_by}.",
            attested_by=batch.created_by,
            attested_at=now,
            attested_file=batch.file_name,
            attested_sha256=batch.sha256,
            import_batch=batch,
        )
        chosen = examples
    else:
        gold_set = gold_draft(project)
        if gold_set is None:
            latest = project.gold_sets.order_by("-version").first()
            gold_set = GoldSet.objects.create(project=project, version=(latest.version + 1) if latest else 1)
        in_gold = set(
            GoldSetItem.objects.filter(example__project=project).values_list("example_id", flat=True)
        )
        chosen = [(pk, answer) for pk, answer in examples if pk not in in_gold]
    GoldSetItem.objects.bulk_create(
        [
            GoldSetItem(gold_set=gold_set, example_id=pk, answer=answer if attested else None)
            for pk, answer in chosen
        ],
        batch_size=2000,
    )
    ids = [pk for pk, _ in chosen]
    for start in range(0, len(ids), 2000):  # under SQLite's limit on query parameters
        Example.objects.filter(pk__in=ids[start : start + 2000]).update(is_gold=True)
        ReviewClaim.objects.filter(example_id__in=ids[start : start + 2000]).delete()
    forget_decided([batch.project_id])  # a decided card made gold leaves the queue's count
    if attested:
        gold_set.freeze(user=batch.created_by)
    return {"gold_version": gold_set.version, "gold_items": len(chosen)}
