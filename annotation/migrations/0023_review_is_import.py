from django.db import migrations, models


def mark_imported_reviews(apps, schema_editor):
    """Reviews an import of verified labels wrote: in bulk, with no proposal and no time spent
    (a reviewer's bulk accept always names the proposal it accepts)."""
    Review = apps.get_model("annotation", "Review")
    Review.objects.filter(
        kind="review", is_bulk=True, proposal__isnull=True, seconds_spent__isnull=True, verdict="correct"
    ).update(is_import=True)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0022_import_xlsx_invitations"),
    ]

    operations = [
        migrations.AddField(
            model_name="review",
            name="is_import",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="Written by an import of verified labels, not a reviewer's verdict.",
            ),
        ),
        migrations.RunPython(mark_imported_reviews, migrations.RunPython.noop),
    ]
