"""Gold leaves only through the gold export; every other export leaves it out and says so (issue #23)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.models import Example, GoldSet, GoldSetItem, Review
from tests.annotation.test_export import labelled  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def gold(project, labelled, lead, reviewer):  # noqa: F811
    """A frozen version holding a reviewed example, and a draft holding another one."""
    frozen = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=frozen, example=labelled[1], answer="Technical support")
    frozen.freeze(user=lead)
    draft = GoldSet.objects.create(project=project, version=2)
    GoldSetItem.objects.create(gold_set=draft, example=labelled[3])
    Example.objects.filter(pk__in=[labelled[1].pk, labelled[3].pk]).update(is_gold=True)
    Review.objects.create(
        example=labelled[3], reviewer=reviewer, kind="blind", verdict="correct", value="Other"
    )
    Review.objects.create(
        example=labelled[2], reviewer=reviewer, verdict="correct", value="Other"
    )  # not gold
    return {labelled[1].pk, labelled[3].pk}


def command_ids(project, tmp_path, capsys, *args) -> set[int]:
    out = tmp_path / "out.jsonl"
    call_command("export_examples", "--project", project.slug, "--format", "jsonl", "--out", str(out), *args)
    return {json.loads(line)["example_id"] for line in out.read_text().splitlines()}


def page_ids(client, project, **params):
    response = client.get(
        reverse("annotation:project-export", args=[project.slug]), {"format": "jsonl", **params}
    )
    assert response.status_code == 200
    ids = {
        json.loads(line)["example_id"] for line in b"".join(response.streaming_content).decode().splitlines()
    }
    return ids, response


@pytest.mark.parametrize("args", [(), ("--reviewed",)])
def test_the_command_leaves_gold_out_and_says_so(project, gold, tmp_path, capsys, args):
    ids = command_ids(project, tmp_path, capsys, *args)
    assert ids and not ids & gold
    assert "Left out 2 gold examples" in capsys.readouterr().err


def test_the_gold_command_is_the_way_out_for_gold(project, gold, tmp_path, capsys):
    assert command_ids(project, tmp_path, capsys, "--gold", "1") == {min(gold)}


@pytest.mark.parametrize("scope", ["all", "reviewed"])
def test_the_page_leaves_gold_out_and_says_so(project, gold, reviewer_client, scope):
    ids, response = page_ids(reviewer_client, project, scope=scope)
    assert ids and not ids & gold
    assert response["X-Distill-Gold-Left-Out"] == "2"


def test_the_pages_gold_export_holds_the_version(project, gold, reviewer_client, lead_client):
    ids, response = page_ids(reviewer_client, project, scope="gold", gold="1")
    assert ids == {min(gold)} and "X-Distill-Gold-Left-Out" not in response
    form = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert "Everything but gold" in form and "Gold examples leave only in a gold set version" in form
