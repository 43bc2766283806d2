from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from training import services
from training.models import TrainingRun


class Command(BaseCommand):
    help = (
        "Evaluate a training run (and the teacher) on a frozen gold set version. Gold items the run "
        "trained on are left out of its metrics and reported as gold_overlap; the command then exits "
        "non-zero unless --allow-overlap is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--run", type=int, required=True, help="Run number (with --project) or run id.")
        parser.add_argument("--project", help="Project slug; then --run is the run number.")
        parser.add_argument("--gold", type=int, help="Gold version (default: the latest frozen one).")
        parser.add_argument("--target-accuracy", type=float, default=0.95)
        parser.add_argument("--json", action="store_true", help="Print the metrics as JSON.")
        parser.add_argument(
            "--allow-overlap",
            action="store_true",
            help="Exit 0 even when the gold version shares examples with the run's training data "
            "(they are left out of the metrics either way).",
        )

    def handle(self, *args, **opts) -> None:
        if opts["project"]:
            project = Project.objects.filter(slug=opts["project"]).first()
            run = TrainingRun.objects.filter(project=project, number=opts["run"]).first() if project else None
        else:
            run = TrainingRun.objects.filter(pk=opts["run"]).first()
        if run is None:
            raise CommandError("No such training run.")
        try:
            student = services.evaluate_run(
                run=run, gold_version=opts["gold"], target_accuracy=opts["target_accuracy"]
            )
            teacher = services.evaluate_teacher(
                project=run.project,
                gold_version=student.gold_set.version,
                target_accuracy=opts["target_accuracy"],
            )
        except services.TrainingError as exc:
            raise CommandError(str(exc)) from None
        overlap = student.metrics["gold_overlap"]
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "run": run.number,
                        "gold_version": student.gold_set.version,
                        "gold_overlap": overlap,
                        "student": student.metrics,
                        "teacher": teacher.metrics,
                        "overlap": {k: len(v) for k, v in services.error_analysis(student, teacher).items()},
                    }
                )
            )
        else:
            task = run.project.task

            def score(evaluation) -> str:
                if evaluation.metrics.get("not_measured"):
                    return f"not measured ({evaluation.metrics['not_measured']})"
                value = evaluation.metrics.get("score", evaluation.metrics.get("accuracy"))
                return "n/a" if value is None else f"{value:.3f}"

            self.stdout.write(
                f"Gold v{student.gold_set.version}: student {task.score_name} {score(student)}; "
                f"teacher {task.score_name} {score(teacher)}."
            )
        if overlap["count"]:
            n = overlap["count"]
            message = (
                f"{n} gold item{' was' if n == 1 else 's were'} in run {run.number}'s training data "
                f"(example ids {', '.join(map(str, overlap['example_ids'][:20]))}"
                f"{', …' if n > 20 else ''}); they are left out of the student's metrics."
            )
            if not opts["allow_overlap"]:
                raise CommandError(message + " Pass --allow-overlap to accept this.")
            self.stderr.write(self.style.WARNING(message))
