"""Slow clients do not hold the server (issue 14, item 5): against a real gunicorn with the
project's settings (gthread workers), on 127.0.0.1, a normal request is answered while more
slow clients than there are workers send their bodies one byte at a time."""

import pytest

from tests.support.slow_clients import answer_time_while_held, gunicorn

pytestmark = pytest.mark.slow


def test_the_shipped_gunicorn_answers_while_slow_clients_hold_every_worker(tmp_path):
    with gunicorn(workers=2, database=tmp_path / "db.sqlite3") as url:
        answered = answer_time_while_held(url, slow_clients=4, wait_s=10)
    assert answered is not None, "no answer within 10 s while 4 slow clients were connected"
