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

from annotation import corpus, projects
from annotation.corpus import import_batch_claim, import_batch_run
from annotation.models import Label, Membership, Project

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "tickets.jsonl"
DEMO_SLUG = "support-tickets"
# The extraction demo: booking requests we wrote ourselves, with their spans.
BOOKINGS_FILE = Path(__file__).resolve().parents[2] / "demo" / "bookings.jsonl"
BOOKINGS_SLUG = "table-bookings"
# The first requests come in with their spans as reviewed answers, the rest as bare texts:
# enough for the offline teacher to learn from, and a queue left to review.
BOOKINGS_REVIEWED = 16
BOOKINGS_FIELDS = [
    # name, description, key, colour, allows many values
    ("date", "The day of the booking as written: a weekday, a date, today, tomorrow.", "d", "#2a9d8f", True),
    ("time", "The time of the booking as written: 7:30pm, 19:00, noon, 8ish.", "t", "#e76f51", True),
    ("people", "How many people the table is for, as written: 4, two, 2 adults.", "p", "#e9c46a", True),
    ("name", "The name the booking is under.", "n", "#7fa7d9", False),
]
BOOKINGS_GUIDELINES = """\
# Table bookings

Mark the **date**, **time**, **people** and **name** of a booking request, each exactly as the
guest wrote it.

- Mark only what the guest asks to book (or change): a question about opening hours holds no booking.
- Keep a title with the name (*Dr. Helen Park*) but not words around it (*under the name*).
- Mark every value when a request holds two bookings or a change from one time to another.
"""
# The summarisation demo: support calls we wrote ourselves; the first ones come with summaries.
CALLS_FILE = Path(__file__).resolve().parents[2] / "demo" / "calls.jsonl"
CALLS_SLUG = "call-notes"
CALLS_REVIEWED = 8  # summaries a person checked (reviews)
CALLS_PROPOSED = 20  # the rest of the summaries come from another system, to review
CALLS_STYLE = """\
For the support team lead reading the day's calls: **who** called, **what** the problem was and
**what was agreed** (refund, callback, engineer visit), with the amounts, dates and reference numbers
the call gives. Third person, past tense, no greetings.
"""
CALLS_GUIDELINES = """\
# Call notes

Summarise each support call in at most two sentences for the team lead.

- Keep the facts the next person needs: names, order or account numbers, amounts, dates, the outcome.
- Never add a fact the call does not state; a number or name marked *possibly unsupported* must be
  checked against the call before you accept.
- Reject (`x`) a text that is not a support call.
"""
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
    help = (
        "Create the demo projects (support-ticket classifier, 150 tickets; table-booking extraction, "
        "81 requests; call-note summaries, 60 calls) and demo logins. Idempotent."
    )

    def handle(self, *args, **opts) -> None:
        # Seeded once: once the demo project exists, nothing is created again, so a demo
        # login an operator deleted stays deleted; and a server that is not a local run
        # (DJANGO_SECURE on) never gets "demo"/"demo" but a random password, shown once.
        if Project.objects.filter(slug=DEMO_SLUG).exists():
            # An installation seeded before a later demo existed gets it once, led by the demo
            # lead if that login is still there.
            User = get_user_model()
            lead = User.objects.filter(username="demo").first()
            if lead is not None:
                reviewer = User.objects.filter(username="reviewer").first()
                if not Project.objects.filter(slug=BOOKINGS_SLUG).exists():
                    self._bookings(lead, reviewer)
                if not Project.objects.filter(slug=CALLS_SLUG).exists():
                    self._calls(lead, reviewer)
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
                project = projects.project_create(
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
                batch = corpus.import_batch_create(
                    project=project, user=lead, file_name=DEMO_FILE.name, path=texts
                )
                if import_batch_claim(batch.pk):
                    batch = import_batch_run(batch=batch)
            self.stdout.write(f"Demo project created with {batch.rows_created} tickets.")
        if not Project.objects.filter(slug=BOOKINGS_SLUG).exists():
            self._bookings(lead, reviewer)
        if not Project.objects.filter(slug=CALLS_SLUG).exists():
            self._calls(lead, reviewer)
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

    def _bookings(self, lead, reviewer) -> None:
        """The extraction demo: 81 booking requests, the first few with reviewed spans."""
        with transaction.atomic():
            project = projects.project_create(
                name="Table bookings",
                slug=BOOKINGS_SLUG,
                user=lead,
                task_type="extraction",
                guidelines=BOOKINGS_GUIDELINES,
            )
            for name, description, key, color, allows_many in BOOKINGS_FIELDS:
                label = projects.label_create(project=project, name=name, description=description, key=key)
                Label.objects.filter(pk=label.pk).update(color=color, allows_many=allows_many)
            if reviewer is not None:
                Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
        with tempfile.TemporaryDirectory() as tmp:
            requests = Path(tmp) / BOOKINGS_FILE.name
            with (
                open(BOOKINGS_FILE, encoding="utf-8") as source,
                open(requests, "w", encoding="utf-8") as out,
            ):
                for number, line in enumerate(source):
                    record = json.loads(line)
                    if number >= BOOKINGS_REVIEWED:
                        record = {"text": record["text"]}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            # The spans that come with the first requests are answers people checked.
            batch = corpus.import_batch_create(
                project=project,
                user=lead,
                file_name=BOOKINGS_FILE.name,
                path=requests,
                label_meaning=corpus.LABELS_VERIFIED,
            )
            if import_batch_claim(batch.pk):
                batch = import_batch_run(batch=batch)
        self.stdout.write(
            f"Extraction demo project created with {batch.rows_created} booking requests "
            f"({min(BOOKINGS_REVIEWED, batch.rows_created)} reviewed)."
        )

    def _calls(self, lead, reviewer) -> None:
        """The summarisation demo: 60 support calls; the first summaries reviewed, the next ones
        another system's proposals, the rest bare texts for the teacher."""
        with transaction.atomic():
            project = projects.project_create(
                name="Call notes",
                slug=CALLS_SLUG,
                user=lead,
                task_type="summarization",
                task_options={"target_unit": "sentences", "target_length": 2, "style": CALLS_STYLE},
                guidelines=CALLS_GUIDELINES,
            )
            if reviewer is not None:
                Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
        records = [json.loads(line) for line in CALLS_FILE.read_text(encoding="utf-8").splitlines()]
        parts = [
            (records[:CALLS_REVIEWED], {"label_meaning": corpus.LABELS_VERIFIED}),
            (
                records[CALLS_REVIEWED:],
                {"label_meaning": corpus.LABELS_PREDICTIONS, "label_agent": "agent-notes"},
            ),
        ]
        created = 0
        with tempfile.TemporaryDirectory() as tmp:
            for number, (part, options) in enumerate(parts):
                path = Path(tmp) / f"calls-{number}.jsonl"
                path.write_text(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8"
                )
                batch = corpus.import_batch_create(
                    project=project,
                    user=lead,
                    file_name=CALLS_FILE.name,
                    path=path,
                    label_column="summary",
                    **options,
                )
                if import_batch_claim(batch.pk):
                    created += import_batch_run(batch=batch).rows_created
        self.stdout.write(
            f"Summarisation demo project created with {created} calls ({CALLS_REVIEWED} summaries reviewed, "
            f"{CALLS_PROPOSED - CALLS_REVIEWED} proposed by another system)."
        )
