from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation import corpus, services
from annotation.importing import import_batch_claim, import_batch_run
from annotation.models import ImportBatch, Project
from distillapp.progress import follow_row


class Command(BaseCommand):
    help = "Import examples from a CSV, TSV, JSONL or TXT file into a project (all or nothing)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--file", required=True, type=Path)
        parser.add_argument("--format", choices=corpus.FORMATS, help="Default: from the file name.")
        parser.add_argument("--text-column", default="text")
        parser.add_argument("--label-column", default="", help="Existing labels, imported as proposals.")
        parser.add_argument("--id-column", default="id")
        parser.add_argument(
            "--create-labels", action="store_true", help="Add unknown labels instead of failing."
        )
        parser.add_argument("--user", default="", help="Username recorded as the importer.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {opts['project']!r}.")
        path: Path = opts["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"No user called {opts['user']!r}.")
        try:
            batch = services.import_batch_create(
                project=project,
                user=user,
                file_name=path.name,
                path=path,
                fmt=opts["format"],
                text_column=opts["text_column"],
                label_column=opts["label_column"],
                id_column=opts["id_column"],
                create_labels=opts["create_labels"],
            )
        except services.ServiceError as exc:
            raise CommandError(str(exc)) from None
        if not import_batch_claim(batch.pk):
            raise CommandError("The import batch could not be claimed.")
        with follow_row(
            ImportBatch,
            batch.pk,
            desc="import",
            unit="B",
            fields=["bytes_done", "size_bytes"],
            position=lambda row: (row["bytes_done"], row["size_bytes"]),
            enabled=not opts["no_progress"],
        ):
            batch = import_batch_run(batch=batch)
        if batch.status != ImportBatch.Status.SUCCEEDED:
            for row in batch.error_report:
                self.stderr.write(f"  line {row['line']}: {row['reason']}")
            raise CommandError(batch.error)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {batch.rows_created:,} new examples into {project.slug} "
                f"({batch.rows_duplicate:,} duplicates skipped, {batch.rows_read:,} rows read"
                + (f", {batch.proposals_created:,} labels as proposals" if batch.proposals_created else "")
                + (f", {batch.labels_created} labels created" if batch.labels_created else "")
                + f"); batch {batch.pk}."
            )
        )
