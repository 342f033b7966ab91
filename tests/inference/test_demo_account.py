"""``manage.py demo_account``: the local user ``make run`` creates once and prints."""

from __future__ import annotations

import stat

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory


def password_in(path) -> str:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())["password"]


@pytest.mark.django_db
def test_demo_account_is_created_once_with_a_password_kept_in_the_file(tmp_path, capsys):
    path = tmp_path / ".demo-account"
    call_command("demo_account", str(path), "--url", "http://127.0.0.1:8123")
    password = password_in(path)
    assert len(password) >= 16 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (
        authenticate(RequestFactory().post("/accounts/login/"), username="demo", password=password)
        is not None
    )
    printed = capsys.readouterr().out
    assert "http://127.0.0.1:8123/accounts/login/" in printed and password in printed

    call_command("demo_account", str(path))  # again: same user, same password
    assert password_in(path) == password and get_user_model().objects.count() == 1
    assert password in capsys.readouterr().out


@pytest.mark.django_db
def test_demo_account_on_a_fresh_database_reuses_the_password(tmp_path):
    path = tmp_path / ".demo-account"
    path.write_text("username: demo\npassword: kept-from-before\n")
    call_command("demo_account", str(path))
    assert (
        authenticate(
            RequestFactory().post("/accounts/login/"), username="demo", password="kept-from-before"
        )
        is not None
    )


@pytest.mark.django_db
def test_deleting_the_file_gives_the_demo_user_a_new_password(tmp_path):
    path = tmp_path / ".demo-account"
    call_command("demo_account", str(path))
    old = password_in(path)
    path.unlink()
    call_command("demo_account", str(path))
    assert password_in(path) != old
    assert (
        authenticate(RequestFactory().post("/accounts/login/"), username="demo", password=old)
        is None
    )
    assert (
        authenticate(
            RequestFactory().post("/accounts/login/"), username="demo", password=password_in(path)
        )
        is not None
    )


@pytest.mark.django_db
def test_demo_account_file_without_a_password_is_refused(tmp_path):
    path = tmp_path / ".demo-account"
    path.write_text("username: demo\n")
    with pytest.raises(CommandError, match="has no 'password:' line"):
        call_command("demo_account", str(path))


@pytest.mark.django_db
def test_demo_account_prints_the_login_and_admin_pages_of_the_site(tmp_path, capsys):
    call_command("demo_account", str(tmp_path / ".demo-account"), "--url", "http://lab:8000/")
    printed = capsys.readouterr().out
    assert "http://lab:8000/accounts/login/ as 'demo'" in printed
    assert "http://lab:8000/admin/." in printed
