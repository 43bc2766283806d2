from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation import teacher
from annotation.models import LabelingJob, Project, TeacherConfig
from distillapp.progress import follow_row


class Command(BaseCommand):
    help = (
        "Label a project's examples with its teacher: an LLM (openai) or the task type's offline "
        "teacher (offline: embeddings for labels, a dictionary of reviewed values for extraction, "
        "an extractive baseline for summaries)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument(
            "--teacher",
            choices=["openai", "offline", TeacherConfig.Provider.EMBEDDING],
            help='openai, or offline: the project\'s own offline teacher ("embedding" is an older name for it).',
        )
        parser.add_argument("--sample", type=int, help="Label a random sample of N unlabelled examples.")
        parser.add_argument("--search", default="", help="Label the examples whose text contains this.")
        parser.add_argument("--gold", action="store_true", help="Label the gold examples (teacher vs gold).")
        parser.add_argument(
            "--wait", action="store_true", help="Run here with a progress bar instead of queueing."
        )
        parser.add_argument("--user", default="")

    def handle(self, *args, **opts) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {opts['project']!r}.")
        selection = (
            LabelingJob.Selection.GOLD
            if opts["gold"]
            else LabelingJob.Selection.SAMPLE
            if opts["sample"]
            else LabelingJob.Selection.SEARCH
            if opts["search"]
            else LabelingJob.Selection.UNLABELLED
        )
        user = get_user_model().objects.filter(username=opts["user"]).first() if opts["user"] else None
        try:
            job = teacher.labeling_job_create(
                project=project,
                user=user,
                selection=selection,
                sample_size=opts["sample"],
                search=opts["search"],
                provider=TeacherConfig.Provider.EMBEDDING
                if opts["teacher"] == "offline"
                else opts["teacher"],
            )
        except teacher.LabelingError as exc:
            raise CommandError(str(exc)) from None
        estimate = job.estimate
        if estimate["provider"] == TeacherConfig.Provider.EMBEDDING:
            # Say which offline teacher this task type has: not always an embedding one.
            task = project.task
            self.stdout.write(
                f"Job {job.pk}: {estimate['examples']:,} examples with {task.offline_teacher_about} "
                f"(agent teacher:{estimate['model']}…:prompt-v{estimate['prompt_version']}, "
                "its name carrying what it learnt from); no API cost."
            )
        else:
            self.stdout.write(
                f"Job {job.pk}: {estimate['examples']:,} examples with {estimate['model']} "
                f"(prompt v{estimate['prompt_version']}), estimated ${estimate['cost_usd']} ({estimate['basis']})."
            )
        if not opts["wait"]:
            with transaction.atomic():
                teacher.labeling_job_start(job=job)
            self.stdout.write("Queued on the llm queue; a worker will run it.")
            return
        if not teacher.labeling_job_claim(job.pk):
            raise CommandError("The job could not be claimed.")
        with follow_row(
            LabelingJob,
            job.pk,
            desc="label",
            unit="ex",
            fields=["total", "done", "failed", "cached", "cost_usd"],
            position=lambda row: (row["done"] + row["failed"] + row["cached"], row["total"]),
            postfix=lambda row: {"failed": row["failed"], "cost": f"${row['cost_usd']:.4f}"},
        ):
            job = teacher.run_with_heartbeat(job.pk, lambda: teacher.labeling_job_run(job=job))
        self.stdout.write(
            self.style.SUCCESS(
                f"Job {job.pk} {job.status_label.lower()}: {job.done:,} labelled, {job.failed:,} failed, "
                f"{job.cached:,} from cache; {job.input_tokens:,} + {job.output_tokens:,} tokens, ${job.cost_usd:.4f}."
            )
        )
