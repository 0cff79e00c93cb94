from django.core.management.base import BaseCommand, CommandError

from counters.models import ApiKey, Role
from counters.names import is_valid_namespace


class Command(BaseCommand):
    help = "Create an API key and print it (only the key) on stdout. The key cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--role", choices=Role.values, default=Role.READ)
        parser.add_argument(
            "--namespace",
            action="append",
            default=[],
            dest="namespaces",
            help="Limit the key to this namespace (repeatable); without it the key reaches every namespace.",
        )

    def handle(self, *args, name, role, namespaces, **options):
        bad = [ns for ns in namespaces if not is_valid_namespace(ns)]
        if bad:
            raise CommandError(f"Invalid namespace names: {', '.join(bad)}")
        _, raw = ApiKey.generate(name, role=role, namespaces=namespaces)
        self.stdout.write(raw)
