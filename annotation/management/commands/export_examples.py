from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation import corpus, projects
from annotation.models import Project


class Command(BaseCommand):
    help = (
        "Export a project's examples with current labels and provenance as CSV or JSONL "
        "(extraction: JSONL with spans and fields, or CoNLL BIO). Gold examples leave only "
        "through --gold: every other export leaves them out."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", choices=["csv", "jsonl", "conll"], default="jsonl")
        parser.add_argument(
            "--gold",
            type=int,
            help="Only the examples of this frozen gold set version (the only export holding gold).",
        )
        parser.add_argument(
            "--reviewed", action="store_true", help="Only reviewed (or rejected) examples, gold left out."
        )
        parser.add_argument("--out", type=Path, help="Output file (default: standard output).")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {opts['project']!r}.")
        if opts["gold"] is not None and opts["reviewed"]:
            raise CommandError("Use either --gold or --reviewed, not both.")
        task = project.task
        if opts["format"] not in task.export_formats:
            raise CommandError(
                f"A {task.title.lower()} project exports {' or '.join(task.export_formats)}, "
                f"not {opts['format']}."
            )
        scope = "gold" if opts["gold"] is not None else "reviewed" if opts["reviewed"] else "all"
        try:
            examples, gold_set = corpus.examples_for_export(
                project=project, scope=scope, gold_version=opts["gold"]
            )
        except projects.ServiceError as exc:
            raise CommandError(str(exc)) from None
        if gold_set is None and (left_out := corpus.gold_left_out(project)):
            self.stderr.write(f"Left out {left_out:,} gold examples: they leave only through --gold VERSION.")
        records = corpus.export_records(examples, gold_set=gold_set)
        if opts["out"]:
            with open(opts["out"], "w", encoding="utf-8", newline="") as out:
                count = corpus.write_export(records, fmt=opts["format"], out=out, task=task)
            self.stderr.write(self.style.SUCCESS(f"Wrote {count:,} examples to {opts['out']}."))
        else:
            corpus.write_export(records, fmt=opts["format"], out=sys.stdout, task=task)
