# A gold item holds any task's answer (a label, a span set, a summary): "answer", not "label".

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0025_job_status"),
    ]

    operations = [
        migrations.RenameField(model_name="goldsetitem", old_name="label", new_name="answer"),
    ]
