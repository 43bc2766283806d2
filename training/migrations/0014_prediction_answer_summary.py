# A prediction log keeps a short summary of any task's answer, not a label.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0013_job_status"),
    ]

    operations = [
        migrations.RenameField(model_name="predictionlog", old_name="label", new_name="answer_summary"),
        migrations.RenameField(
            model_name="predictionlog", old_name="student_label", new_name="student_answer_summary"
        ),
    ]
