"""The extraction half of bench/review_budget_bench.py (``--task extraction``): Restaurant-8k
with the simulated span teacher of bench/extraction_bench.py, through the app's services.

- pool: Restaurant-8k train (8,198 rows; ``--limit N``: a seeded sample), gold: its test
  split (3,731 rows; ``--gold-limit``) imported as an attested gold file (gold v1 holds the
  REAL test spans; a test text that is also a train text is gold only);
- teacher: ``extraction_bench.simulate_teacher`` (seed 81: misses 15 % of the spans, moves
  one boundary of 10 % by a word, gives 5 % another field; a SIMULATION with no confidence)
  on the pool texts, imported as predictions of ``import:simulated-teacher``;
- reviewer: accepts where the teacher's spans are the true ones (``Task.same``), else
  corrects with the true spans (``review_record(verdict="correct", value=...)``);
- ceiling: the pool imported with its true spans as verified labels;
- ``queue_errors``: what the first 10 % of a queue order holds, by kind of teacher error
  (span level: missed, boundary, wrong_field, spurious), as a share of all such errors in
  the pool (random: about 0.10).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from extraction_bench import (
    RESTAURANT_FIELDS,
    SHARED_DATA,
    TEACHER_AGENT,
    TEACHER_TRAIN_SEED,
    restaurant8k,
    simulate_teacher,
    write_jsonl,
)

from tasks.extraction.risk import ERROR_KINDS, error_kinds  # noqa: E402

DATA = SHARED_DATA / "restaurant8k"
KINDS = tuple(ERROR_KINDS)
TOP_SHARE = 0.10


class SpanData:
    """Pool and gold rows, each text once (first occurrence, as the import), and the truth."""

    score_key = "strict_f1"
    teacher_names = ("simulated",)

    def __init__(self, *, limit: int | None, gold_limit: int | None, work: Path) -> None:
        from annotation.models import content_hash

        train, test = restaurant8k("train"), restaurant8k("test")
        if limit:
            train = [
                train[i] for i in sorted(random.Random(13).sample(range(len(train)), min(limit, len(train))))
            ]
        if gold_limit:
            test = [
                test[i]
                for i in sorted(random.Random(14).sample(range(len(test)), min(gold_limit, len(test))))
            ]
        self.truth: dict[str, dict] = {}
        for text, answer in train + test:
            self.truth.setdefault(content_hash(text), answer)
        self.pool_rows, self.gold_rows = train, test
        self.work = work
        self.teacher, self.teacher_counts = simulate_teacher(train, RESTAURANT_FIELDS, TEACHER_TRAIN_SEED)
        self.teacher_by_hash = {}
        for (text, _), answer in zip(train, self.teacher, strict=True):
            self.teacher_by_hash.setdefault(content_hash(text), answer)
        texts = [t for t, _ in train]
        self.pool_human = write_jsonl(work / "pool_human.jsonl", texts, [a for _, a in train])
        self.pool_teacher = write_jsonl(work / "pool_teacher.jsonl", texts, self.teacher)
        self.gold = write_jsonl(work / "gold.jsonl", [t for t, _ in test], [a for _, a in test])

    def new_project(self, slug: str, *, human_labels: bool = False):
        from extraction_bench import import_jsonl
        from review_budget_bench import users

        from annotation import projects
        from annotation.corpus.importing import GOLD_ATTESTED, LABELS_PREDICTIONS, LABELS_VERIFIED

        lead, reviewer = users()
        project = projects.project_create(
            name=slug,
            slug=slug,
            user=lead,
            task_type="extraction",
            labels=[(n, "") for n in RESTAURANT_FIELDS],
        )
        projects.membership_set(project=project, username=reviewer.username, role="reviewer")
        if human_labels:
            import_jsonl(project, lead, self.pool_human, label_meaning=LABELS_VERIFIED)
        else:
            agent = TEACHER_AGENT.partition(":")[2]
            import_jsonl(
                project, lead, self.pool_teacher, label_meaning=LABELS_PREDICTIONS, label_agent=agent
            )
        import_jsonl(project, lead, self.gold, gold=GOLD_ATTESTED)
        return project

    def add_teacher(self, project, teacher: str) -> dict:
        """The simulated teacher came with the pool's import; how right it is there."""
        from review_budget_bench import pool_examples

        from tasks.extraction.measure import entity_scores

        pool = pool_examples(project)
        gold = [self.truth[d] for _, _, d in pool]
        given = [self.teacher_by_hash[d] for _, _, d in pool]
        scores = entity_scores(gold, given, RESTAURANT_FIELDS)
        right = sum(project.task.same(g, t) for g, t in zip(gold, given, strict=True))
        return {
            "teacher_strict_f1_on_pool": round(scores["strict"]["micro"]["f1"], 4),
            "teacher_accuracy_on_pool": round(right / len(pool), 4),  # texts wholly right
            "pool": len(pool),
            "simulation": self.teacher_counts,
        }

    def verdict(self, example) -> tuple[str, dict, bool]:
        """(verdict, review_record's answer arguments, was the teacher wrong)."""
        from annotation import review

        truth = self.truth[example.content_hash]
        proposal = review.teacher_proposal(example)
        if proposal is not None and example.project.task.same(proposal.value, truth):
            return "accept", {}, False
        return "correct", {"value": truth}, True

    def queue_errors(self, project, strategies: dict[str, str]) -> dict:
        """For each named order (name -> QueueFilter strategy): the share of each kind of teacher
        error in the pool that its first 10 % holds, and how many times the random share."""
        from annotation import review

        examples = list(
            review.queue(project, review.QueueFilter()).values_list("pk", "content_hash", "queue_rank")
        )
        per_example = {
            pk: error_kinds(self.truth[digest]["spans"], self.teacher_by_hash[digest]["spans"])
            for pk, digest, _ in examples
        }
        totals = {kind: sum(c[kind] for c in per_example.values()) for kind in KINDS}
        top = int(TOP_SHARE * len(examples))
        out = {"pool": len(examples), "first": top, "errors_in_pool": totals}
        for name, strategy in strategies.items():
            first = review.first_served(project, review.QueueFilter(strategy=strategy), top)
            found = {kind: sum(per_example[pk][kind] for pk in first) for kind in KINDS}
            out[name] = {
                "strategy": strategy,
                "share": {k: round(found[k] / totals[k], 4) if totals[k] else None for k in KINDS},
                "times_random": {
                    k: round(found[k] / totals[k] / TOP_SHARE, 2) if totals[k] else None for k in KINDS
                },
                "texts_with_an_error": sum(any(per_example[pk].values()) for pk in first),
            }
        return out


def summary_line(output: dict) -> str:
    return json.dumps({k: output.get(k) for k in ("ceiling_quick", "gap_at_10pct_points")})
