from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.models import Project
from distillapp.progress import follow_row
from training import services
from training.models import TrainingRun


class Command(BaseCommand):
    help = "Train a student on a project's current labels (never its gold examples)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--kind",
            choices=[c for c, _ in TrainingRun.Kind.choices],
            default=TrainingRun.Kind.FINETUNE,
            help="finetune (default), quick (frozen embeddings + logistic regression: seconds) or "
            "ensemble (the average of the two runs given with --members).",
        )
        parser.add_argument(
            "--members", type=int, nargs=2, metavar="RUN", help="An ensemble's two run numbers."
        )
        parser.add_argument("--c", type=float, help="The quick student's regularisation C.")
        parser.add_argument(
            "--noise",
            choices=["none", "prune", "weight", "prune+weight"],
            help="What to do with unreviewed labels (default: none).",
        )
        parser.add_argument("--epochs", type=float)
        parser.add_argument("--learning-rate", type=float)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--max-length", type=int)
        parser.add_argument(
            "--base-model", default="", help="A local path or hub id; default: bundled MiniLM-L6."
        )
        parser.add_argument(
            "--label-source", choices=[c for c, _ in TrainingRun.LabelSource.choices], default="all"
        )
        parser.add_argument("--min-confidence", type=float, default=0.0)
        parser.add_argument("--synthetic", action="store_true", help="Also train on synthetic examples.")
        parser.add_argument(
            "--wait", action="store_true", help="Train here with a progress bar instead of queueing."
        )

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {opts['project']!r}.")
        hp = {
            key: opts[name]
            for key, name in [
                ("epochs", "epochs"),
                ("learning_rate", "learning_rate"),
                ("batch_size", "batch_size"),
                ("max_length", "max_length"),
                ("C", "c"),
                ("noise_handling", "noise"),
            ]
            if opts[name] is not None
        }
        members = []
        if opts["kind"] == TrainingRun.Kind.ENSEMBLE:
            if not opts["members"]:
                raise CommandError("An ensemble averages two runs: give their numbers with --members N M.")
            found = {r.number: r for r in project.training_runs.filter(number__in=opts["members"])}
            missing = [n for n in opts["members"] if n not in found]
            if missing:
                raise CommandError(f"{project.slug} has no run {', '.join(map(str, missing))}.")
            members = [found[n] for n in opts["members"]]
        try:
            run = services.run_create(
                project=project,
                user=None,
                base_model=opts["base_model"],
                hyperparameters=hp,
                label_source=opts["label_source"],
                teacher_min_confidence=opts["min_confidence"],
                include_synthetic=opts["synthetic"],
                kind=opts["kind"],
                members=members,
            )
        except services.TrainingError as exc:
            raise CommandError(str(exc)) from None
        estimate = run.counts["estimate"]
        self.stdout.write(
            f"Run {run.number}: {estimate['examples']:,} examples; it takes {estimate['about']}."
        )
        if not opts["wait"]:
            with transaction.atomic():
                services.run_start(run=run)
            self.stdout.write("Queued on the training queue.")
            return
        if not services.run_claim(run.pk):
            raise CommandError("The run could not be claimed.")
        with follow_row(
            TrainingRun,
            run.pk,
            desc="train",
            unit="step",
            fields=["step", "total_steps", "loss", "phase"],
            position=lambda row: (row["step"], row["total_steps"]),
            postfix=lambda row: {"loss": f"{row['loss'] or 0:.4f}", "phase": row["phase"]},
        ):
            run = services.run_execute(run=run)
        validation = run.metrics.get("validation", {})
        # The student reports its task's own validation number (accuracy, or strict F1 for spans).
        name, value = next(
            ((k, v) for k, v in validation.items() if k in ("accuracy", "strict_f1") and v is not None),
            ("validation", None),
        )
        measured = (
            f"validation {name.replace('_', ' ')} {value:.3f}" if value is not None else "no validation split"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Run {run.number} {run.status_label.lower()} on {run.device or '?'} in "
                f"{run.train_seconds or 0:.0f} s; {measured}; artifacts in {run.artifact_path}."
            )
        )
