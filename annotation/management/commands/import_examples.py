from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation import corpus, projects
from annotation.corpus import import_batch_claim, import_batch_run
from annotation.models import ImportBatch, Project
from distillapp.progress import follow_row


class Command(BaseCommand):
    help = (
        "Import examples from a CSV, TSV, Excel (.xlsx, first sheet), JSONL or TXT file into a project (all or nothing); "
        "extraction projects also read JSONL spans or fields and CoNLL BIO."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--file", required=True, type=Path)
        parser.add_argument(
            "--format",
            choices=corpus.ALL_FORMATS,
            help="Default: from the file name (.conll/.bio: conll, extraction projects only).",
        )
        parser.add_argument("--text-column", default="text")
        parser.add_argument("--label-column", default="", help="Existing labels (see --labels-are).")
        parser.add_argument(
            "--labels-are",
            choices=["predictions", "verified"],
            default="predictions",
            help="predictions: another system's answers, proposals by import[:AGENT] (default); "
            "verified: checked by people, recorded as reviews by --user (a lead).",
        )
        parser.add_argument("--agent", default="", help="Name of the predicting system: import:AGENT.")
        parser.add_argument("--id-column", default="id")
        parser.add_argument(
            "--keep-columns",
            default=None,
            help="Comma-separated other columns kept as metadata (default: all).",
        )
        parser.add_argument("--no-metadata", action="store_true", help="Keep no other columns.")
        parser.add_argument(
            "--hidden-column",
            default="",
            help="A column stored apart, never shown to reviewers nor exported.",
        )
        parser.add_argument(
            "--gold",
            choices=["candidates", "attested"],
            default="",
            help="candidates: into the draft gold set, to label blind; attested: a new frozen gold "
            "version with the file's labels, attested as verified by --user (a lead).",
        )
        parser.add_argument(
            "--create-labels",
            action="store_true",
            help="Add unknown labels (extraction: fields) instead of failing.",
        )
        parser.add_argument("--user", default="", help="Username recorded as the importer.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {opts['project']!r}.")
        path = Path(opts["file"])  # call_command(file="x.csv") passes the string as it is
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"No user called {opts['user']!r}.")
        try:
            batch = corpus.import_batch_create(
                project=project,
                user=user,
                file_name=path.name,
                path=path,
                fmt=opts["format"],
                text_column=opts["text_column"],
                label_column=opts["label_column"],
                id_column=opts["id_column"],
                create_labels=opts["create_labels"],
                label_meaning=opts["labels_are"],
                label_agent=opts["agent"],
                keep_columns=[]
                if opts["no_metadata"]
                else (opts["keep_columns"].split(",") if opts["keep_columns"] is not None else None),
                hidden_column=opts["hidden_column"],
                gold=opts["gold"],
            )
        except projects.ServiceError as exc:
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
        answers = (
            "verified reviews"
            if batch.options.get("label_meaning") == "verified"
            else f"proposals by {batch.options.get('label_agent') or 'import'}"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {batch.rows_created:,} new examples into {project.slug} "
                f"({batch.rows_duplicate:,} duplicates skipped, {batch.rows_read:,} rows read"
                + (f", {batch.proposals_created:,} labels as {answers}" if batch.proposals_created else "")
                + (f", {batch.labels_created} labels created" if batch.labels_created else "")
                + (
                    f", {batch.options['gold_items']:,} into gold v{batch.options['gold_version']}"
                    if batch.options.get("gold")
                    else ""
                )
                + f"); batch {batch.pk}."
            )
        )
