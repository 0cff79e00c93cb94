from django.db import migrations, models


def forget_global_watermark(apps, schema_editor):
    # The single global row is replaced by one row per namespace; a namespace without a row is
    # swept from the beginning once, which is always safe.
    apps.get_model("rollups", "SweepState").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("rollups", "0002_checkpoint_first_event_ts")]

    operations = [
        migrations.RunPython(forget_global_watermark, migrations.RunPython.noop),
        migrations.AddField(
            model_name="sweepstate",
            name="namespace",
            field=models.CharField(max_length=63, unique=True, default=""),
            preserve_default=False,
        ),
    ]
