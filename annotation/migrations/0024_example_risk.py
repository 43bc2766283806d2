from django.db import migrations, models


def fill_risk(apps, schema_editor):
    # Until the next sync, an example's risk is what the disagreement order read before.
    Example = apps.get_model("annotation", "Example")
    Example.objects.filter(is_disagreement=True).update(risk=1.0)


class Migration(migrations.Migration):

    dependencies = [
        ("annotation", "0023_review_is_import"),
    ]

    operations = [
        migrations.AddField(
            model_name="example",
            name="risk",
            field=models.FloatField(
                default=0.0,
                db_default=0.0,
                editable=False,
                help_text="How strongly the teacher's answer looks wrong (the task's review_risk: the student "
                "against it, an ambiguous placement); the disagreement order serves the highest first.",
            ),
        ),
        migrations.RunPython(fill_risk, migrations.RunPython.noop),
        migrations.AddField(
            model_name="labelingjob",
            name="answer_notes",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="What the task noted reading the answers (Task.answer_note_names), summed.",
            ),
        ),
        migrations.RemoveIndex(model_name="example", name="queue_disagreement_idx"),
        migrations.AddIndex(
            model_name="example",
            index=models.Index(
                fields=["project", "is_gold", "review_state", "-risk", "teacher_confidence"],
                name="queue_risk_idx",
            ),
        ),
    ]
