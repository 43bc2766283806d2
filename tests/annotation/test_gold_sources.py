"""Gold from the team's own test set: drawn from one import or a review filter, imported
as blind candidates, or imported as a frozen version a lead attests."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation import review
from annotation.models import Example, GoldSet, ImportBatch, Proposal

pytestmark = pytest.mark.django_db


def make_batch(project, name: str, texts: list[str], label: str) -> ImportBatch:
    batch = ImportBatch.objects.create(project=project, file_name=name, format="csv", status="succeeded")
    for text in texts:
        example = Example.objects.create(project=project, text=text, import_batch=batch)
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=label, confidence=0.6)
    batch.rows_created = len(texts)
    batch.save()
    Example.objects.filter(project=project).sync_queue_fields()
    return batch


@pytest.fixture
def two_files(project):
    train = make_batch(project, "train.csv", [f"train ticket {i}" for i in range(20)], "Billing")
    test = make_batch(project, "test.csv", [f"test ticket {i}" for i in range(6)], "Other")
    return train, test


def test_draw_from_one_import_batch(project, two_files):
    _, test = two_files
    gold = review.gold_draw(project=project, size=100, import_batch_id=test.pk, seed=1)
    assert set(gold.items.values_list("example__import_batch", flat=True)) == {test.pk}
    assert gold.items.count() == 6


def test_draw_from_a_review_filter(project, two_files):
    gold = review.gold_draw(project=project, size=4, filters=review.QueueFilter(search="test ticket"), seed=1)
    texts = list(gold.items.values_list("example__text", flat=True))
    assert len(texts) == 4 and all(t.startswith("test ticket") for t in texts)


def test_draw_form_offers_batches_and_uses_the_leads_filter(project, two_files, lead_client):
    train, test = two_files
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    assert f'value="batch:{test.pk}"' in page and "import test.csv" in page
    assert 'value="filter"' in page
    # The lead's review filter is kept in the session; the draw takes it.
    lead_client.get(
        reverse("annotation:review", args=[project.slug]), {"strategy": "confidence", "q": "train"}
    )
    lead_client.post(reverse("annotation:gold-draw", args=[project.slug]), {"size": "5", "source": "filter"})
    texts = list(review.gold_draft(project).items.values_list("example__text", flat=True))
    assert len(texts) == 5 and all(t.startswith("train ticket") for t in texts)
    lead_client.post(
        reverse("annotation:gold-draw", args=[project.slug]), {"size": "50", "source": f"batch:{test.pk}"}
    )
    assert review.gold_draft(project).items.filter(example__import_batch=test).count() == 6


def test_draw_default_size_fits_a_small_project(project, two_files, lead_client):
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    # Half of the 26 at most: a default draw never takes the whole corpus out of training.
    assert 'name="size" value="13"' in page


def upload(content: bytes, name: str = "team-test.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def test_upload_as_attested_gold_shows_provenance_on_gold_and_evaluation(project, lead, lead_client):
    from training import services as training_services

    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {
            "file": upload(b"text,label\ncard charged twice,Billing\napp crashes,Technical support\n"),
            "text_column": "text",
            "label_column": "label",
            "gold": "attested",
        },
        follow=True,
    )
    page = response.content.decode()
    assert "gold v1 is frozen with its 2 attested labels" in page
    assert "Labels attested as verified by lena_lead" in page and "team-test.csv" in page
    gold = GoldSet.objects.get(project=project)
    assert gold.is_frozen and gold.attested_by == lead
    evaluation = training_services.evaluate_teacher(project=project)
    page = lead_client.get(
        reverse("training:evaluation", args=[project.slug, evaluation.pk])
    ).content.decode()
    assert 'data-field="gold-provenance"' in page and "team-test.csv" in page and "lena_lead" in page


def test_upload_labels_need_a_stated_meaning(project, lead_client):
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {"file": upload(b"text,label\nx,Billing\n"), "text_column": "text", "label_column": "label"},
        follow=True,
    )
    assert "Say whether the labels are verified" in response.content.decode()
    assert not ImportBatch.objects.exists()


def test_upload_as_gold_candidates_goes_to_blind_labelling(project, lead_client):
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {
            "file": upload(b"text\nfirst test text\nsecond test text\n"),
            "text_column": "text",
            "gold": "candidates",
        },
        follow=True,
    )
    assert "2 are gold candidates in v1" in response.content.decode()
    draft = review.gold_draft(project)
    assert draft.items.count() == 2 and not draft.is_frozen


def test_reviewer_cannot_import_as_gold(project, reviewer_client):
    response = reviewer_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {"file": upload(b"text,label\nx,Billing\n"), "label_column": "label", "gold": "attested"},
    )
    assert response.status_code == 403
    assert not GoldSet.objects.exists()


def test_the_draw_suggests_a_sample_not_the_whole_project_and_says_it_leaves_training(project, lead_client):
    from annotation.forms import recommended_gold_size
    from annotation.models import Example

    for i in range(170):
        Example.objects.create(project=project, text=f"ticket {i}")
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    assert 'name="size" value="20"' in page  # a tenth, at least 20; not "Draw 170"
    assert "leave training for good" in page
    assert [recommended_gold_size(n) for n in (0, 10, 60, 170, 3000, 50_000)] == [1, 5, 20, 20, 300, 400]


def test_an_attested_gold_import_is_not_counted_as_reviews(project, lead, lead_client):
    """#24 honest figures: old code showed "3 reviewed" on the overview beside "No reviews yet",
    and "3 reviewed today" on the lead's review page right after the import."""
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {
            "file": upload(
                b"text,label\ncard charged twice,Billing\napp crashes,Technical support\nhi,Other\n"
            ),
            "text_column": "text",
            "label_column": "label",
            "gold": "attested",
        },
        follow=True,
    )
    assert "gold v1 is frozen with its 3 attested labels" in response.content.decode()
    overview = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert '<span class="num" data-count="reviewed">0</span>' in overview
    assert '<span class="num" data-count="imported-verified">3</span>' in overview
    assert "verified on import" in overview
    page = lead_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert '<strong data-count="reviewed-today">0</strong> reviewed today' in page
    # A reviewer's verdict on one of them counts again.
    from annotation.models import Review

    example = Example.objects.get(project=project, text="hi")
    Review.objects.create(example=example, reviewer=lead, verdict="accept", value="Other")
    overview = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert '<span class="num" data-count="reviewed">1</span>' in overview
    assert '<span class="num" data-count="imported-verified">2</span>' in overview
    page = lead_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert '<strong data-count="reviewed-today">1</strong> reviewed today' in page
