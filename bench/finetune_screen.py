"""Train one finished fine-tune's exact training set again with other settings (a screen).

A diagnosis tool for the review-budget work (bench/README.md, "Review budget"): given the
data dir that ``bench/review_budget_bench.py --keep`` left behind, it reads a fine-tune's
manifest (the rows it trained on, with their labels, and its validation rows), trains the
classification student on exactly those rows with the run's hyperparameters plus the
``--set`` overrides, and prints one JSON object:

- ``dev_accuracy``: on the run's validation rows scored against their *true* Banking77
  labels (a dev set that is not gold; at 5 % of the rows it is small, so gold is reported too);
- ``gold_accuracy``: on the Banking77 test split (each text once, as the app's gold set);
- ``train_noise``: how many of the training labels are wrong (the truth is known here);
- ``disagrees_with_unreviewed_labels``: how many unreviewed training labels, wrong and right,
  the trained model itself predicts otherwise (in sample).

``--true-labels`` trains on the same rows with their true labels: the difference to the plain
screen is what the wrong labels left in cost, the rest of the gap to the human-label run is
what the rows left out cost. ``--second-pass`` then trains again without the unreviewed
labels the first model disagrees with (``second_pass`` in the output).

    python bench/finetune_screen.py --data-dir /tmp/review-budget-XXXX/data \
        --set label_smoothing=0.2 --set seed=14 --torch-threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from banking77_distill import cpu_model  # noqa: E402
from review_budget_bench import DATA, loadavg, log, read_csv  # noqa: E402


def parse_set(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"--set wants key=value, not {text!r}")
    return key, json.loads(value) if value[0] in "0123456789-.tf[{" else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the app's data dir (DISTILL_DATA_DIR)")
    parser.add_argument("--project", default=None, help="project slug (default: the newest fine-tune's)")
    parser.add_argument("--run", type=int, default=None, help="run number (default: the newest fine-tune)")
    parser.add_argument("--set", type=parse_set, action="append", default=[], help="hyperparameter=value")
    parser.add_argument(
        "--true-labels",
        action="store_true",
        help="train on the same rows with their true labels (what the wrong labels left in cost)",
    )
    parser.add_argument(
        "--second-pass",
        action="store_true",
        help="then train again without the unreviewed labels the first model disagrees with",
    )
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()

    os.environ["DISTILL_DATA_DIR"] = str(args.data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from annotation.models import Example, content_hash
    from distillapp import ml
    from tasks import stats
    from training.models import TrainingRun
    from training.services.runs import artifacts_root, run_defaults

    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.FINETUNE, status=TrainingRun.Status.SUCCEEDED)
    if args.project:
        runs = runs.filter(project__slug=args.project)
    if args.run:
        runs = runs.filter(number=args.run)
    run = runs.order_by("-finished_at").first()
    if run is None:
        parser.error("no finished fine-tune matches")
    manifest = json.loads(
        (artifacts_root() / run.project.slug / f"run-{run.number}" / "manifest.json").read_text()
    )
    task = run.project.task
    hp = {**run_defaults(task, run.kind), **run.hyperparameters, **dict(args.set)}
    fields = {k: hp[k] for k in asdict(ml.Hyperparameters()) if k in hp}
    unknown = sorted(set(dict(args.set)) - set(fields))
    if unknown:
        parser.error(f"not a hyperparameter: {', '.join(unknown)}")

    texts = dict(Example.objects.filter(project=run.project).values_list("pk", "text"))
    truth: dict[str, str] = {}
    for row in read_csv(DATA / "train.csv") + read_csv(DATA / "test.csv"):
        truth.setdefault(content_hash(row["text"]), row["category"])
    gold = {content_hash(r["text"]): r for r in reversed(read_csv(DATA / "test.csv"))}
    gold_texts = [r["text"] for r in gold.values()]
    gold_labels = [r["category"] for r in gold.values()]
    train, validation = manifest["train"], manifest["validation"]
    log(f"run {run.number} of {run.project.slug}: {len(train)} train, {len(validation)} validation; {fields}")

    student = task.student_for(TrainingRun.Kind.FINETUNE)
    started = time.monotonic()

    def train_and_score(rows: list[dict]) -> tuple[dict, set[int]]:
        """Train on `rows`; score it; the unreviewed rows whose label the model predicts otherwise."""
        with tempfile.TemporaryDirectory(prefix="screen-") as out:
            result = student.train(
                texts=[texts[r["id"]] for r in rows],
                answers=[truth[r["hash"]] if args.true_labels else r["label"] for r in rows],
                names=manifest["labels"],
                base_model=run.base_model or ml.default_base_model(),
                output_dir=Path(out),
                hyperparameters=ml.Hyperparameters(**fields),
                validation=([texts[r["id"]] for r in validation], [r["label"] for r in validation]),
            )

            def predict(batch: list[str]) -> list[str]:
                probabilities, names = student.predict_proba(
                    Path(out), batch, max_length=fields["max_length"]
                )
                return stats.best_labels(probabilities, names)[0]

            def accuracy(batch: list[str], labels: list[str]) -> float:
                hits = sum(p == g for p, g in zip(predict(batch), labels, strict=True))
                return round(hits / len(labels), 4)

            # The trained model's own view of the unreviewed labels it learnt from: how many
            # of the wrong ones (and of the right ones) it disagrees with, in sample.
            unreviewed = [r for r in rows if r["state"] != "reviewed"]
            disagrees = {"wrong": 0, "right": 0, "prediction_is_truth": 0}
            flagged = set()
            for row, guess in zip(unreviewed, predict([texts[r["id"]] for r in unreviewed]), strict=True):
                if guess != row["label"]:
                    flagged.add(row["id"])
                    disagrees["wrong" if row["label"] != truth[row["hash"]] else "right"] += 1
                    disagrees["prediction_is_truth"] += guess == truth[row["hash"]]
            return {
                "train": len(rows),
                "train_reviewed": sum(r["state"] == "reviewed" for r in rows),
                "train_noise": sum(r["label"] != truth[r["hash"]] for r in rows),
                "dev_accuracy": accuracy(
                    [texts[r["id"]] for r in validation], [truth[r["hash"]] for r in validation]
                ),
                "validation_accuracy_given_labels": round(result.validation["accuracy"], 4),
                "gold_accuracy": accuracy(gold_texts, gold_labels),
                "disagrees_with_unreviewed_labels": disagrees,
                "train_seconds": round(result.seconds, 1),
            }, flagged

    first, flagged = train_and_score(train)
    output = {
        "run": {"project": run.project.slug, "number": run.number},
        "set": dict(args.set),
        "true_labels": args.true_labels,
        "hyperparameters": fields,
        **first,
        "gold_rows": len(gold_texts),
    }
    if args.second_pass:
        log(f"second pass without the {len(flagged)} unreviewed labels the first model disagrees with")
        output["second_pass"] = train_and_score([r for r in train if r["id"] not in flagged])[0]
    output["total_seconds"] = round(time.monotonic() - started, 1)
    output["cpu"] = {"model": cpu_model(), "torch_threads": torch.get_num_threads(), "loadavg": loadavg()}
    text = json.dumps(output, indent=1)
    if args.save:
        args.save.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
