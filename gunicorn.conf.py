"""gunicorn settings of the web server (read from the working directory; the Docker image's
command uses it).

Threaded workers (gthread): a client that sends its request slowly holds one thread, not a whole
worker, so a few slow clients cannot stop the site (issue 14). In front of the internet, put a
buffering proxy (nginx in docker-compose.yml) before gunicorn as well: it receives every request
body whole, with its own timeouts, before gunicorn sees it.
"""

import os

bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", "4"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Uploads are checked in the request (headers, a full decode of the volume): minutes for the
# largest ones.
timeout = 300
# Idle keep-alive connections wait in the worker's poller, not in a thread.
keepalive = 5
