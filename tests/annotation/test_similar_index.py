""" "More like this" reads cached vectors only; a worker's job embeds the pool (issue #23).

Before, the request embedded up to 5,000 texts itself (9.4 s on a cold pool of 150)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

import distillapp.jobs
from annotation import jobs, review
from annotation.models import Example, SimilarityIndex
from annotation.review import similar
from distillapp import embeddings, ml

pytestmark = pytest.mark.django_db

TEXTS = [
    "my card payment was declined at the shop",
    "the card payment failed in the store",
    "payment with my card was refused",
    "how do I change my home address",
    "I moved house, update my address please",
    "what is the weather like today",
]


@pytest.fixture
def embedded(monkeypatch, settings, tmp_path):
    """Texts the base model embeds, by call (a fresh embedding cache in the test's data dir)."""
    settings.DATA_DIR = tmp_path
    seen: list[str] = []
    real = ml.embed_texts

    def counting(texts, **kwargs):
        seen.extend(texts)
        return real(texts, **kwargs)

    monkeypatch.setattr(ml, "embed_texts", counting)
    return seen


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Call `action` as if its transaction committed: what waits for that (queueing) runs."""

    def call(action, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return action(*args, **kwargs)

    return call


@pytest.fixture
def pool(project):
    examples = [Example.objects.create(project=project, text=t) for t in TEXTS]
    Example.objects.filter(project=project).sync_queue_fields()
    return examples


def more_like(client, project, example):
    return client.post(
        reverse("annotation:review-similar", args=[project.slug]),
        {"example_id": example.pk},
        headers={"HX-Request": "true"},
    )


def test_an_unindexed_pool_is_not_embedded_in_the_request_but_by_the_queued_job(
    project, pool, reviewer_client, embedded, queues, committed
):
    response = committed(more_like, reviewer_client, project, pool[0])
    html = response.content.decode()
    assert response.status_code == 200
    assert embedded == []  # the request loaded no model and embedded nothing
    assert "Still indexing (0 of 5 texts ready)" in html and "ask again in a minute" in html
    # The queue is left as it was (nothing ranked yet), and the index job is queued once.
    assert "Most like #" not in html
    index = SimilarityIndex.objects.get(project=project)
    assert index.status == "pending" and queues["short"].count == 1
    committed(more_like, reviewer_client, project, pool[0])
    assert queues["short"].count == 1 and SimilarityIndex.objects.count() == 1

    jobs.run_similarity_index(index.pk)
    index.refresh_from_db()
    assert (index.status, index.texts_total, index.texts_done) == ("succeeded", 6, 6)
    assert sorted(embedded) == sorted(TEXTS)

    embedded.clear()
    html = committed(more_like, reviewer_client, project, pool[0]).content.decode()
    assert embedded == [] and "Still indexing" not in html
    assert f"The 5 unreviewed texts most like #{pool[0].pk}" in html and f"Most like #{pool[0].pk}" in html
    found = similar.similar_to(pool[0])
    assert set(found.ids[:2]) == {pool[1].pk, pool[2].pk} and found.ids[-1] == pool[5].pk
    assert queues["short"].count == 1  # nothing more to index: nothing queued


def test_a_half_indexed_pool_ranks_what_is_ready_and_says_how_much(
    project, pool, reviewer_client, embedded, queues, committed
):
    cache = similar._cache()
    embeddings.embed_cached([TEXTS[0], TEXTS[2], TEXTS[5]], **cache)  # say, a quick run's
    embedded.clear()
    html = committed(more_like, reviewer_client, project, pool[0]).content.decode()
    assert embedded == []
    assert "Still indexing (2 of 5 texts ready)" in html and "among those ready" in html
    found = similar.similar_to(pool[0])
    assert found.ids == [pool[2].pk, pool[5].pk] and found.is_indexing
    # The job embeds only what the cache lacks.
    jobs.run_similarity_index(SimilarityIndex.objects.get(project=project).pk)
    assert sorted(embedded) == sorted([TEXTS[1], TEXTS[3], TEXTS[4]])
    assert not similar.similar_to(pool[0]).is_indexing


def test_an_import_queues_the_index_once(project, tmp_path, embedded, queues, committed):
    from tests.annotation.test_import import run_import

    committed(run_import, project, tmp_path, "\n".join(TEXTS) + "\n", name="pool.txt")
    assert embedded == []
    index = SimilarityIndex.objects.get(project=project)
    assert index.status == "pending" and queues["short"].count == 1
    # A second import while it waits adds nothing to the queue: the waiting job takes it all.
    committed(run_import, project, tmp_path, "another text entirely\n", name="more.txt")
    assert queues["short"].count == 1
    jobs.run_similarity_index(index.pk)
    assert len(embedded) == len(TEXTS) + 1
    # After it ran, the next import queues it again; an import that adds nothing does not.
    committed(run_import, project, tmp_path, "one more\n", name="third.txt")
    assert SimilarityIndex.objects.get().status == "pending" and queues["short"].count == 2
    jobs.run_similarity_index(index.pk)
    committed(run_import, project, tmp_path, "one more\n", name="again.txt")  # a duplicate: no new text
    assert SimilarityIndex.objects.get().status == "succeeded" and queues["short"].count == 2


def test_api_traffic_kept_for_review_queues_the_index(project, embedded, queues, committed, monkeypatch):
    from training.serving import writer

    monkeypatch.setattr(writer, "_index_asked", {})  # what this process asked for, and when

    committed(
        writer._write_traffic,
        [writer.TrafficExample(project_id=project.pk, text=t, proposals=()) for t in TEXTS[:3]],
    )
    assert Example.objects.filter(project=project).count() == 3 and embedded == []
    index = SimilarityIndex.objects.get(project=project)
    assert index.status == "pending" and queues["short"].count == 1
    jobs.run_similarity_index(index.pk)
    # Steady traffic does not keep a worker loading the model for a text or two: after a run,
    # intake queues the index again only once INTAKE_INDEX_EVERY has passed (a search at once).
    keep = [writer.TrafficExample(project_id=project.pk, text=t, proposals=()) for t in TEXTS[3:5]]
    committed(writer._write_traffic, keep[:1])
    assert SimilarityIndex.objects.get().status == "succeeded" and queues["short"].count == 1
    # Two minutes later (the row's end and this process's last ask both that old):
    SimilarityIndex.objects.update(finished_at=timezone.now() - review.INTAKE_INDEX_EVERY)
    writer._index_asked.clear()
    committed(writer._write_traffic, keep[1:])
    assert SimilarityIndex.objects.get().status == "pending" and queues["short"].count == 2


def test_a_dead_index_worker_is_recovered_and_continues(project, pool, embedded, queues, committed):
    """The row is the machinery's like every job's: a stale running index goes back to the queue."""
    committed(review.similarity_index_start, project_id=project.pk)
    index = SimilarityIndex.objects.get(project=project)
    SimilarityIndex.objects.filter(pk=index.pk).update(
        status="running", worker="nowhere:1", heartbeat_at=None
    )
    index.refresh_from_db()
    assert index.status == "running"
    SimilarityIndex.objects.filter(pk=index.pk).update(
        heartbeat_at=timezone.now() - distillapp.jobs.stale_after() * 2
    )
    assert distillapp.jobs.recover(SimilarityIndex) == [index.pk]
    jobs.run_similarity_index(index.pk)
    index.refresh_from_db()
    assert index.status == "succeeded" and sorted(embedded) == sorted(TEXTS)


def test_a_failed_index_says_why_on_the_card(
    project, pool, reviewer_client, embedded, queues, committed, monkeypatch
):
    def broken(texts, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(ml, "embed_texts", broken)
    committed(review.similarity_index_start, project_id=project.pk)
    index = SimilarityIndex.objects.get(project=project)
    with pytest.raises(OSError):
        jobs.run_similarity_index(index.pk)
    index.refresh_from_db()
    assert index.status == "failed" and "no space left" in index.error
    # The next search queues it again (a worker may have been fixed meanwhile).
    html = committed(more_like, reviewer_client, project, pool[0]).content.decode()
    assert "Still indexing (0 of 5 texts ready)" in html
    assert SimilarityIndex.objects.get().status == "pending"


def test_a_big_pool_is_indexed_over_several_runs_each_queued_behind_waiting_jobs(
    project, pool, embedded, queues, committed, monkeypatch
):
    monkeypatch.setattr(similar, "INDEX_RUN_TEXTS", 4)
    committed(review.similarity_index_start, project_id=project.pk)
    index = SimilarityIndex.objects.get(project=project)
    committed(jobs.run_similarity_index, index.pk)
    index.refresh_from_db()
    # Four of six embedded (the newest first), and the row queued again for the rest.
    assert len(embedded) == 4 and sorted(embedded) == sorted(TEXTS[2:])
    assert (index.status, index.texts_total, index.texts_done) == ("pending", 4, 4)
    assert queues["short"].count == 2
    committed(jobs.run_similarity_index, index.pk)
    index.refresh_from_db()
    assert sorted(embedded) == sorted(TEXTS) and index.status == "succeeded" and queues["short"].count == 2


def test_a_worker_for_every_lane_takes_a_queued_fine_tune_before_the_index_run_queued_after_it(
    project, pool, embedded, queues, committed, monkeypatch
):
    """With the short lane's own worker (serve's default), a worker for every lane takes that
    lane last: the fault bench's fine-tune waited minutes behind index runs queued again and
    again (issue #23). Without one, a gold evaluation still goes before a fine-tune."""
    import rq

    from distillapp.queues import worker_queues

    monkeypatch.setattr(similar, "INDEX_RUN_TEXTS", 4)
    committed(queues["training"].enqueue, "training.jobs.run_training_run", 1)  # the lead's run, waiting
    committed(review.similarity_index_start, project_id=project.pk)
    index = SimilarityIndex.objects.get(project=project)
    queues["short"].empty()  # a short-lane worker took the first run, and it runs here
    committed(jobs.run_similarity_index, index.pk)  # and queues the next run for the rest
    assert queues["short"].count == 1 and queues["training"].count == 1

    def taken_first(short_workers: int) -> str:
        lanes = [queues[name] for name in worker_queues(short_workers=short_workers)]
        job, queue = rq.Queue.dequeue_any(lanes, None, connection=queues["short"].connection)
        queue.enqueue_job(job, at_front=True)  # put back
        return job.func_name

    assert taken_first(1) == "training.jobs.run_training_run"
    assert taken_first(0) == "annotation.jobs.run_similarity_index"
