from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from annotation import services
from annotation.importing import import_batch_claim, import_batch_run
from annotation.models import Membership, Project

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "tickets.jsonl"
DEMO_SLUG = "support-tickets"
DEMO_LABELS = [
    (
        "Billing",
        "Charges, invoices, refunds, payment methods, plan prices, seats billed, VAT, failed payments.",
    ),
    (
        "Technical support",
        "Something is broken: login or SSO errors, crashes, sync problems, slow pages, bugs, failing integrations or API calls.",
    ),
    (
        "Product inquiry",
        "Questions about features, limits, plans and the roadmap: what Lumen can do and how.",
    ),
    ("Other", "Everything else: partnerships, press, job applications, compliments, spam, privacy requests."),
]
DEMO_GUIDELINES = """\
# Support ticket routing

Pick the team that should **answer** the ticket.

- Money questions go to **Billing**, even when the customer is angry about a bug that cost them money.
- If something *used to work and now does not*, it is **Technical support**.
- Questions about what the product *can* do are **Product inquiry**, also from paying customers.
- Use **Other** only when no team above should answer. Reject (`x`) texts that are not tickets at all.
"""


class Command(BaseCommand):
    help = "Create the demo project (support-ticket classifier, 150 tickets) and demo logins. Idempotent."

    def handle(self, *args, **opts) -> None:
        # Seeded once: once the demo project exists, nothing is created again, so a demo
        # login an operator deleted stays deleted; and a server that is not a local run
        # (DJANGO_SECURE on) never gets "demo"/"demo" but a random password, shown once.
        if Project.objects.filter(slug=DEMO_SLUG).exists():
            self.stdout.write("Demo project already there; demo logins unchanged.")
            return
        User = get_user_model()
        password = os.environ.get("DEMO_PASSWORD") or (
            "demo" if not settings.SECURE else secrets.token_urlsafe(12)
        )
        lead, created = User.objects.get_or_create(
            username="demo", defaults={"is_staff": True, "is_superuser": True, "email": "demo@example.com"}
        )
        if created:
            lead.set_password(password)
            lead.save()
        reviewer, created = User.objects.get_or_create(username="reviewer")
        if created:
            reviewer.set_password(password)
            reviewer.save()

        project = Project.objects.filter(slug=DEMO_SLUG).first()
        if project is None:
            with transaction.atomic():
                project = services.project_create(
                    name="Support tickets",
                    slug=DEMO_SLUG,
                    user=lead,
                    guidelines=DEMO_GUIDELINES,
                    labels=DEMO_LABELS,
                )
                Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
            # The tickets come in unlabelled: labelling them is the teacher's
            # job. The file's labels stay out of the project (and out of the
            # examples' metadata, where reviewers would see them).
            with tempfile.TemporaryDirectory() as tmp:
                texts = Path(tmp) / DEMO_FILE.name
                with open(DEMO_FILE, encoding="utf-8") as source, open(texts, "w", encoding="utf-8") as out:
                    for line in source:
                        out.write(json.dumps({"text": json.loads(line)["text"]}) + "\n")
                batch = services.import_batch_create(
                    project=project, user=lead, file_name=DEMO_FILE.name, path=texts
                )
                if import_batch_claim(batch.pk):
                    batch = import_batch_run(batch=batch)
            self.stdout.write(f"Demo project created with {batch.rows_created} tickets.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo logins: lead “demo” / “{password}” (also admin), reviewer “reviewer” / “{password}”"
                + (
                    "."
                    if password == "demo" or os.environ.get("DEMO_PASSWORD")
                    else " (shown once; note it)."
                )
            )
        )
