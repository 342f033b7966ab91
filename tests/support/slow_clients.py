"""Slow clients against a real gunicorn on 127.0.0.1 (issue 14, item 5): each sends its request
headers, then its body one byte at a time, for a bounded number of seconds; meanwhile a normal
request measures whether the server still answers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.task_workers import temporary_root

REPOSITORY = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"  # never anything else: these tests attack the server they start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn(*arguments: str, workers: int, database: Path) -> Iterator[str]:
    """A gunicorn with the project's ``gunicorn.conf.py`` and ``arguments`` (which override it),
    ``workers`` processes, on a free port of 127.0.0.1; yields its base URL, stops it after.
    The processes' temporary roots go beside ``database`` (gunicorn's workers end without
    running atexit, so they could not remove folders of their own)."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.test",
        "DATABASE_URL": f"sqlite:///{database}",
        "WEB_WORKERS": str(workers),
        "WEB_BIND": f"{HOST}:{port}",
        **temporary_root(database.parent / "server-tmp"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            *arguments,
            "ctspine_site.wsgi",
        ],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/accounts/login/", timeout=5).read()
                break
            if server.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {server.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError("gunicorn did not answer within 60 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def csrf_cookie(url: str) -> str:
    """The CSRF cookie the login page sets, as a browser (or an attacker) would hold it."""
    with urllib.request.urlopen(f"{url}/accounts/login/", timeout=10) as page:
        for header in page.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            if name.strip() == "csrftoken":
                return rest.split(";", 1)[0]
    raise RuntimeError("the login page set no csrftoken cookie")


def slow_post(url: str, *, hold_s: float, stop: threading.Event) -> None:
    """POST the login form with a valid CSRF cookie (so Django reads the body), declaring 1000
    bytes and sending one byte every 0.25 s, until ``hold_s`` seconds have passed or ``stop`` is
    set (a bounded loop)."""
    token = csrf_cookie(url)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(
            b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n"
            + f"Cookie: csrftoken={token}\r\n\r\ncsrfmiddlewaretoken={token}&username=".encode()
        )
        deadline = time.monotonic() + hold_s
        with contextlib.suppress(OSError):  # the server may give up on us first: fine
            while time.monotonic() < deadline and not stop.wait(0.25):
                connection.sendall(b"a")


def answer_time_while_held(url: str, *, slow_clients: int, wait_s: float) -> float | None:
    """Seconds a normal GET of the login page takes while ``slow_clients`` slow POSTs hold the
    server; None when it got no answer within ``wait_s`` seconds."""
    stop = threading.Event()
    holders = [
        threading.Thread(target=slow_post, args=(url,), kwargs={"hold_s": wait_s + 5, "stop": stop})
        for _ in range(slow_clients)
    ]
    for holder in holders:
        holder.start()
    time.sleep(1.0)  # the slow requests are in the server
    started = time.perf_counter()
    try:
        urllib.request.urlopen(f"{url}/accounts/login/", timeout=wait_s).read()
        answered = time.perf_counter() - started
    except OSError:
        answered = None
    finally:
        stop.set()
        for holder in holders:
            holder.join(timeout=10)
    return answered
