from django.core.management.base import BaseCommand

from counterproject import embedded


class Command(BaseCommand):
    help = "Stop the embedded PostgreSQL and Redis under COUNTER_DATA_DIR (they start on demand)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["stop"])

    def handle(self, *args, action, **options):
        stopped = embedded.stop()
        self.stdout.write("stopped: " + (", ".join(stopped) or "nothing"))
