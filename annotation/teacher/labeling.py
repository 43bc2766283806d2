"""Teacher labelling jobs: choose examples, call the teacher, store proposals.

A job's examples are fixed when it first starts (one LabelingJobItem each). Every answer is
written in the same transaction that moves its item from pending to done, guarded by a
conditional update, so a job killed at any point and run again labels each example once and
counts each cost once. Identical requests are answered from earlier proposals (the cache), and
unwritten answers of a dead worker from the journal (`journal.py`): no call is paid twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.db.models import Avg, F, Q
from django.utils import timezone

from annotation.models import (
    STUDENT_AGENT_PREFIX,
    Example,
    LabelingJob,
    LabelingJobItem,
    Project,
    PromptVersion,
    Proposal,
    TeacherConfig,
)
from annotation.teacher import client as teacher_boundary
from annotation.teacher import journal
from annotation.teacher.memory import needs_reviewed
from annotation.teacher.service import (
    LabelingError,
    agent_name,
    few_shot_chooser,
    prompt_version_current,
    reviewed_memory,
    teacher_config_for,
    teacher_config_snapshot,
    teacher_settings,
)
from distillapp import jobs

CHUNK = 256
# The LLM job's writer waits up to this long after an answer for a concurrency's worth
# of them, and writes at most that many at once (bench/README.md, "Teacher": a write's
# fixed cost against its answers' own).
WRITE_GATHER_SECONDS = 0.2


# --- choosing examples -------------------------------------------------------------------------


def select_examples(*, project: Project, selection: str, sample_size: int | None = None, search: str = ""):
    examples = Example.objects.for_project(project)
    if selection == LabelingJob.Selection.GOLD:
        return examples.filter(Q(is_gold=True) | Q(gold_items__isnull=False)).distinct().order_by("pk")
    examples = examples.with_current_label()
    if selection == LabelingJob.Selection.SEARCH:
        if not search.strip():
            raise LabelingError("Give the text to search for.")
        return examples.filter(text__icontains=search.strip()).order_by("pk")
    unlabelled = examples.filter(label_state="unlabelled")
    if selection == LabelingJob.Selection.SAMPLE:
        if not sample_size:
            raise LabelingError("Give the sample size.")
        return unlabelled.order_by("?")[:sample_size]
    if selection == LabelingJob.Selection.UNLABELLED:
        return unlabelled.order_by("pk")
    raise LabelingError(f"Unknown selection {selection!r}.")


def labeling_estimate(
    *,
    project: Project,
    selection: str,
    sample_size: int | None = None,
    search: str = "",
    config: TeacherConfig | None = None,
) -> dict:
    """Examples x tokens x price, from this prompt's measured calls when there are some.

    ``config``: settings not saved yet (the settings form's live estimate); else the project's.
    ``cost_at_most_usd`` bounds the bill: every answer at max_tokens, for every sample.
    """
    config = config or teacher_config_for(project)
    prompt = prompt_version_current(project)
    examples = select_examples(project=project, selection=selection, sample_size=sample_size, search=search)
    count = examples.count()
    measured = (
        Proposal.objects.filter(prompt_version=prompt, input_tokens__gt=0)
        .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .aggregate(i=Avg("input_tokens"), o=Avg("output_tokens"))
    )
    if measured["i"]:
        input_per, output_per, basis = float(measured["i"]), float(measured["o"] or 0), "measured"
    else:
        system = teacher_boundary.render_system_prompt(
            instructions=prompt.instructions, guidelines=prompt.guidelines, task=prompt.task
        )
        shots = prompt.few_shot_k if prompt.few_shot != PromptVersion.FewShot.NONE else 0
        texts = list(examples.values_list("text", flat=True)[:200]) if count else []
        mean_chars = sum(map(len, texts)) / len(texts) if texts else 0
        # About four characters a token for English text.
        input_per = (len(system) + mean_chars * (1 + shots)) / 4 + 10
        # An eighth of the answer budget: 8 tokens for a label, 64 for a span list.
        output_per, basis = prompt.task.teacher_max_tokens / 8, "estimated"
    call = teacher_settings(config)
    # Self-consistency asks for n answers in one call: the input once, each answer billed.
    samples = call.self_consistency_samples if call.self_consistency_samples >= 2 else 1
    if basis == "estimated":
        output_per *= samples
    if config.provider == TeacherConfig.Provider.EMBEDDING:
        cost = most = Decimal("0")
        model = prompt.task.offline_teacher_name or config.agent_model
    else:
        cost = call.cost_usd(int(input_per * count), int(output_per * count))
        most = call.cost_usd(int(input_per * count), call.max_tokens * samples * count)
        model = config.agent_model
    return {
        "examples": count,
        "input_tokens": int(input_per * count),
        "output_tokens": int(output_per * count),
        "cost_usd": format(cost.normalize(), "f"),  # "0", not Decimal's "0E-8"
        "cost_at_most_usd": format(most.normalize(), "f"),
        "samples": samples,
        "basis": basis,
        "provider": config.provider,
        "model": model,
        "prompt_version": prompt.version,
    }


# --- jobs ---------------------------------------------------------------------------------------


@transaction.atomic
def labeling_job_create(
    *,
    project: Project,
    user,
    selection: str,
    sample_size: int | None = None,
    search: str = "",
    provider: str | None = None,
) -> LabelingJob:
    config = teacher_config_for(project)
    if provider:
        config.provider = provider  # a one-off override; the project's setting stays
    if project.task.uses_categories and not project.labels.exists():
        noun = project.task.category_noun
        raise LabelingError(f"The project has no {noun}s yet; add {noun}s before labelling.")
    snapshot = teacher_config_snapshot(config)
    if config.provider == TeacherConfig.Provider.OPENAI:
        try:
            teacher_boundary.client_credentials(teacher_settings(config))
        except teacher_boundary.TeacherError as exc:
            raise LabelingError(str(exc)) from None
    estimate = labeling_estimate(project=project, selection=selection, sample_size=sample_size, search=search)
    return LabelingJob.objects.create(
        project=project,
        prompt_version=prompt_version_current(project, user=user),
        teacher=snapshot,
        selection=selection,
        sample_size=sample_size,
        search=search,
        estimate=estimate,
        created_by=user,
    )


def labeling_job_start(*, job: LabelingJob) -> None:
    jobs.enqueue(LabelingJob, job.pk)


def labeling_job_claim(job_id: int) -> bool:
    """Take a job; a running one only if its worker is gone (dead here, or silent)."""
    return jobs.claim(LabelingJob, job_id)


def labeling_job_run(*, job: LabelingJob) -> LabelingJob:
    """Run a claimed job to the end (or until cancelled); the row records how it went."""
    with jobs.running(LabelingJob, job.pk):
        _ensure_items(job)
        # Everything the event loop reads is loaded here: the ORM may not run
        # lazily inside it (SynchronousOnlyOperation).
        job = LabelingJob.objects.select_related("prompt_version", "project").get(pk=job.pk)
        if job.teacher.get("provider") == TeacherConfig.Provider.EMBEDDING:
            _run_embedding(job)
        else:
            asyncio.run(_run_openai(job))
        _finish(job)
    job.refresh_from_db()
    return job


def _ensure_items(job: LabelingJob) -> None:
    """Fix the job's examples once; a resumed job keeps the ones it had."""
    if job.items.exists():
        return
    examples = select_examples(
        project=job.project, selection=job.selection, sample_size=job.sample_size, search=job.search
    )
    ids = list(examples.values_list("pk", flat=True))
    with transaction.atomic():
        LabelingJobItem.objects.bulk_create(
            [LabelingJobItem(job=job, example_id=pk) for pk in ids], ignore_conflicts=True, batch_size=2000
        )
        LabelingJob.objects.filter(pk=job.pk).update(total=job.items.count())


def _finish(job: LabelingJob) -> None:
    job.refresh_from_db()
    if job.is_cancel_requested:
        status = LabelingJob.Status.CANCELLED
    elif job.items.filter(status=LabelingJobItem.Status.PENDING).exists():
        return  # stopped early; the row stays running for a resume
    else:
        status = LabelingJob.Status.SUCCEEDED
    LabelingJob.objects.filter(pk=job.pk).update(
        status=status, finished_at=timezone.now(), heartbeat_at=timezone.now()
    )


def _is_cancelled(job_id: int) -> bool:
    return LabelingJob.objects.filter(pk=job_id, is_cancel_requested=True).exists()


@dataclass
class _Work:
    item_id: int
    example_id: int
    text: str
    messages: list[dict]
    cache_key: str
    cached_proposal_id: int | None = None
    journalled: list | None = None  # answers a killed run received but never wrote


@dataclass
class _Result:
    work: _Work
    answers: list[teacher_boundary.TeacherAnswer]


def _pending_chunks(job: LabelingJob):
    """Pending items in id order, a chunk at a time (each chunk a fresh query)."""
    last = 0
    while True:
        chunk = list(
            job.items.filter(status=LabelingJobItem.Status.PENDING, pk__gt=last)
            .order_by("pk")
            .values_list("pk", "example_id", "example__text")[:CHUNK]
        )
        if not chunk:
            return
        last = chunk[-1][0]
        yield chunk


def _prepare(job: LabelingJob, chunk: list[tuple], choose, system_prompt: str, settings, task) -> list[_Work]:
    texts = [text for _, _, text in chunk]
    shots = choose(texts)
    work = []
    for (item_id, example_id, text), few in zip(chunk, shots, strict=True):
        messages = teacher_boundary.render_messages(
            system_prompt=system_prompt, text=text, task=task, few_shot=few
        )
        key = teacher_boundary.cache_key(
            settings=settings, prompt_version_id=job.prompt_version_id, messages=messages
        )
        work.append(_Work(item_id, example_id, text, messages, key))
    cached = dict(
        Proposal.objects.filter(
            cache_key__in=[w.cache_key for w in work], error="", value__isnull=False
        ).values_list("cache_key", "pk")
    )
    kept = journal.kept(job.pk, [w.cache_key for w in work if w.cache_key not in cached])
    for w in work:
        w.cached_proposal_id, w.journalled = cached.get(w.cache_key), kept.get(w.cache_key)
    return work


def _write(job: LabelingJob, results: list[_Result], agent: str, task=None) -> None:
    """Store answers and mark items done, once each, in one transaction.

    Set-based, whatever the batch size: one locking read of the batch's items, one insert
    of its proposals, one update of its items, one of their examples' queue keys. An item
    that is no longer pending (a resumed run stored it already) is skipped with its answers.
    With the `task`, what it notes about the answers (``Task.answer_notes``) adds up on the
    job's row.
    """
    done = failed = cached = input_tokens = output_tokens = 0
    cost = Decimal("0")
    with transaction.atomic():
        pending = set(
            LabelingJobItem.objects.select_for_update()
            .filter(pk__in=[r.work.item_id for r in results], status=LabelingJobItem.Status.PENDING)
            .values_list("pk", flat=True)
        )
        results = [r for r in results if r.work.item_id in pending]
        now = timezone.now()
        created = iter(
            _insert_proposals(
                [
                    (
                        result.work.example_id,
                        agent,
                        answer.value if answer.is_valid else None,
                        answer.confidence if answer.is_valid else None,
                        answer.confidence_method if answer.is_valid else "",
                        answer.raw_response[:10000],
                        answer.input_tokens,
                        answer.output_tokens,
                        answer.cost_usd,
                        answer.latency_ms,
                        answer.error[:2000],
                        job.prompt_version_id,
                        job.pk,
                        # Only a valid answer may answer an identical request later.
                        result.work.cache_key if answer.is_valid else "",
                        now,
                    )
                    for result in results
                    if not result.work.cached_proposal_id
                    for answer in result.answers
                ]
            )
        )
        items = []
        for result in results:
            work = result.work
            if work.cached_proposal_id:
                items.append((LabelingJobItem.Status.CACHED, work.cached_proposal_id, work.item_id))
                cached += 1
                continue
            for answer in result.answers:
                proposal_id = next(created)
                input_tokens += answer.input_tokens
                output_tokens += answer.output_tokens
                cost += answer.cost_usd
            final = result.answers[-1]
            status = LabelingJobItem.Status.DONE if final.is_valid else LabelingJobItem.Status.FAILED
            items.append((status, proposal_id, work.item_id))
            done += final.is_valid
            failed += not final.is_valid
        _set_items(items)
        # The new answers are the examples' latest teacher proposals: the
        # queue's sort keys follow from them without re-deriving everything.
        Example.objects.note_teacher_answers(
            {
                r.work.example_id: (r.answers[-1].value, r.answers[-1].confidence)
                for r in results
                if r.answers and r.answers[-1].is_valid
            },
            project=job.project,
        )
        notes = _answer_notes(task, results) if task is not None else {}
        if notes:
            row = LabelingJob.objects.select_for_update().only("answer_notes").get(pk=job.pk)
            merged = Counter(row.answer_notes or {})
            merged.update(notes)
            LabelingJob.objects.filter(pk=job.pk).update(answer_notes=dict(merged))
        LabelingJob.objects.filter(pk=job.pk).update(
            done=F("done") + done,
            failed=F("failed") + failed,
            cached=F("cached") + cached,
            input_tokens=F("input_tokens") + input_tokens,
            output_tokens=F("output_tokens") + output_tokens,
            cost_usd=F("cost_usd") + cost,
            heartbeat_at=timezone.now(),
        )


# The columns _insert_proposals writes, in the order of its rows' values.
PROPOSAL_COLUMNS = (
    "example",
    "agent",
    "value",
    "confidence",
    "confidence_method",
    "raw_response",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "error",
    "prompt_version",
    "labeling_job",
    "cache_key",
    "created_at",
)


def _insert_proposals(rows: list[tuple]) -> list[int]:
    """Insert proposals (values in PROPOSAL_COLUMNS' order) in one INSERT; their ids in order.

    Not bulk_create: its model instances and per-field preparation were a third of
    _write's CPU (bench/README.md, "Teacher"); only the JSON, decimal and time values
    need the backend's adaptation.
    """
    if not rows:
        return []
    meta = Proposal._meta
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in PROPOSAL_COLUMNS]
    adapt = [
        (index, field)
        for index, field in enumerate(fields)
        if field.get_internal_type() in ("JSONField", "DecimalField", "DateTimeField")
    ]
    params = []
    for row in rows:
        row = list(row)
        for index, field in adapt:
            row[index] = field.get_db_prep_save(row[index], connection)
        params.extend(row)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([one] * len(rows))} RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Ids are drawn in the VALUES' order; RETURNING need not list them so.
        return sorted(pk for (pk,) in cursor.fetchall())


def _set_items(items: list[tuple[str, int, int]]) -> None:
    """Each item's (status, proposal, pk) in one parameterised UPDATE run (not bulk_update's
    per-row CASE expressions, which cost more CPU than the API calls they record)."""
    if not items:
        return
    quote = connection.ops.quote_name
    meta = LabelingJobItem._meta
    status, proposal, pk = (quote(meta.get_field(name).column) for name in ("status", "proposal", "id"))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {quote(meta.db_table)} SET {status} = %s, {proposal} = %s WHERE {pk} = %s", items
        )


def _answer_notes(task, results: list[_Result]) -> dict[str, int]:
    notes: Counter = Counter()
    for result in results:
        final = result.answers[-1] if result.answers else None
        if final is not None and final.is_valid:
            notes.update(task.answer_notes(final.value, text=result.work.text))
    return dict(notes)


# The offline teacher answers this many texts between writes, so the page's
# done / total moves as it works instead of jumping from 0 to the end.
EMBEDDING_WRITE_EVERY = 32


def _embedding_batches(job: LabelingJob):
    for chunk in _pending_chunks(job):
        for start in range(0, len(chunk), EMBEDDING_WRITE_EVERY):
            yield chunk[start : start + EMBEDDING_WRITE_EVERY]


def _run_embedding(job: LabelingJob) -> None:
    """The offline teacher of the project's task type (classification: embeddings;
    extraction: a dictionary of reviewed values), learned once for the whole job."""
    from annotation.teacher.memory import memory_for_prompt

    prompt = job.prompt_version
    reviewed = reviewed_memory(job.project) if needs_reviewed(prompt) else []
    memory, k = memory_for_prompt(prompt, reviewed)
    model = prompt.task.offline_teacher(memory, k=k)
    # Named by what it learnt from: the same prompt with more reviews is another teacher.
    agent = agent_name(job.teacher, prompt, memory=(memory, k))
    for chunk in _embedding_batches(job):
        if _is_cancelled(job.pk):
            return
        started = time.perf_counter()
        predictions = model.predict([text for _, _, text in chunk])
        per_item_ms = int((time.perf_counter() - started) * 1000 / len(chunk))
        results = [
            _Result(
                _Work(item_id, example_id, text, [], ""),
                [
                    teacher_boundary.TeacherAnswer(
                        value=value,
                        confidence=confidence,
                        confidence_method=model.confidence_method,
                        raw_response="",
                        latency_ms=per_item_ms,
                        attempts=1,
                    )
                ],
            )
            for (item_id, example_id, text), (value, confidence) in zip(chunk, predictions, strict=True)
        ]
        _write(job, results, agent)


async def _run_openai(job: LabelingJob) -> None:
    settings = teacher_settings(job.teacher)
    prompt = job.prompt_version
    # Read in a thread: the task's categories come from the database (async-unsafe here).
    # Primed with the reviewed answers: where a value the text holds twice sits.
    task = await sync_to_async(lambda: job.project.primed(prompt.task), thread_sensitive=True)()
    client = teacher_boundary.OpenAITeacher(settings, task)
    system_prompt = teacher_boundary.render_system_prompt(
        instructions=prompt.instructions, guidelines=prompt.guidelines, task=task
    )
    agent = agent_name(job.teacher, prompt)
    choose = await sync_to_async(few_shot_chooser)(prompt, job.project)
    todo: asyncio.Queue = asyncio.Queue(maxsize=max(2 * settings.concurrency, CHUNK))
    finished: asyncio.Queue = asyncio.Queue()
    enough = asyncio.Event()  # a concurrency's worth of answers await the writer
    stop = asyncio.Event()

    def next_chunks():
        return _pending_chunks(job)

    chunks = await sync_to_async(next_chunks)()
    paid = journal.Journal(job.pk)

    async def feed() -> None:
        while not stop.is_set():
            chunk = await sync_to_async(next, thread_sensitive=True)(chunks, None)
            if chunk is None:
                break
            work = await sync_to_async(_prepare, thread_sensitive=True)(
                job, chunk, choose, system_prompt, settings, task
            )
            for w in work:
                if stop.is_set():
                    break
                await todo.put(w)
        for _ in range(settings.concurrency):
            await todo.put(None)

    async def call() -> None:
        while (work := await todo.get()) is not None:
            if stop.is_set():
                continue
            if work.cached_proposal_id:
                await finished.put(_Result(work, []))
            elif work.journalled is not None:
                await finished.put(_Result(work, work.journalled))
            else:
                answers = await client.ask(work.messages)
                paid.keep(work.cache_key, answers)  # kept before it is written
                await finished.put(_Result(work, answers))
            if finished.qsize() >= settings.concurrency:
                enough.set()
        await finished.put(None)
        enough.set()

    async def write() -> None:
        open_callers, last_check = settings.concurrency, time.monotonic()
        while open_callers:
            batch = []
            item = await finished.get()
            if item is not None and finished.qsize() + 1 < settings.concurrency:
                # Let answers gather (a concurrency's worth, or for a moment): a write's
                # transaction and queries cost as much CPU as a few answers' own rows, and
                # small batches paid it per answer.
                enough.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), WRITE_GATHER_SECONDS)
            while True:
                if item is None:
                    open_callers -= 1
                else:
                    batch.append(item)
                if finished.empty() or len(batch) >= settings.concurrency:
                    break
                item = finished.get_nowait()
            if batch:
                await sync_to_async(_write, thread_sensitive=True)(job, batch, agent, task)
                journal.written(job.pk, [r.work.cache_key for r in batch])
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if await sync_to_async(_is_cancelled, thread_sensitive=True)(job.pk):
                    stop.set()

    try:
        await asyncio.gather(feed(), write(), *(call() for _ in range(settings.concurrency)))
    finally:
        paid.flush()  # a run that stops with an error keeps what it was paid for
        await client.close()
        # The ORM ran in asgiref's worker thread; its connection ends with the job.
        await sync_to_async(connections.close_all, thread_sensitive=True)()


def run_with_heartbeat(job_id: int, fn: Callable[[], object]) -> object:
    """Run fn with the job's heartbeat kept fresh (for callers outside a worker)."""
    with jobs.heartbeat(LabelingJob, job_id):
        return fn()
