"""``manage.py demo_account FILE``: the local demo account ``make run`` signs you in with.

Creates the user ``demo`` once, with a random password kept in FILE (an ignored file in the
project folder, readable by its owner only), and prints how to sign in. Run again, it reuses the
password in FILE; on a fresh database it creates the user again with that password.
"""

import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

USERNAME = "demo"


def read_password(path: Path) -> str | None:
    """The password stored in ``path`` ("username: ...", "password: ..." lines), or None."""
    if not path.is_file():
        return None
    fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    password = fields.get("password", "").strip()
    if not password:
        raise CommandError(f"{path} has no 'password:' line; delete it to make a new password")
    return password


def write_password(path: Path, password: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"username: {USERNAME}\npassword: {password}\n")


class Command(BaseCommand):
    help = "Create the local demo user once (password kept in FILE) and print how to sign in."

    def add_arguments(self, parser):
        parser.add_argument(
            "file", type=Path, help="where the password is kept, e.g. .demo-account"
        )
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the site's address")

    def handle(self, *args, file: Path, url: str, **options):
        password = read_password(file)
        users = get_user_model().objects
        user = users.filter(username=USERNAME).first()
        if password is None:
            password = secrets.token_urlsafe(12)
            write_password(file, password)
            if user is not None:  # the file was deleted: the new password replaces the old one
                user.set_password(password)
                user.save(update_fields=["password"])
        if user is None:
            users.create_user(USERNAME, password=password)
        site = url.rstrip("/")
        self.stdout.write(
            f"Demo account: sign in at {site}{reverse('login')} as '{USERNAME}' with password "
            f"'{password}' (kept in {file}). Add users with 'manage.py createsuperuser' and "
            f"{site}{reverse('admin:index')}."
        )
