from __future__ import annotations

import json
from decimal import Decimal

import pytest

from annotation import corpus
from annotation.corpus import exporting
from annotation.models import Example, Proposal

pytestmark = pytest.mark.django_db


def test_jsonl_costs_are_plain_decimals(project):
    free = Example.objects.create(project=project, text="free answer")
    paid = Example.objects.create(project=project, text="paid answer")
    Proposal.objects.create(example=free, agent="teacher:m:prompt-v1", value="Billing", cost_usd=Decimal("0"))
    Proposal.objects.create(
        example=paid, agent="teacher:m:prompt-v1", value="Other", cost_usd=Decimal("0.000123")
    )
    examples, _ = corpus.examples_for_export(project=project)
    lines = [json.loads(line) for line in exporting.iter_jsonl(corpus.export_records(examples))]
    costs = {r["text"]: r["provenance"]["proposals"][0]["cost_usd"] for r in lines}
    assert costs == {"free answer": "0", "paid answer": "0.000123"}  # never Decimal's "0E-8"
