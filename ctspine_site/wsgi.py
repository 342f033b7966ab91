import os

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ctspine_site.settings.dev")
application = get_wsgi_application()
# gunicorn runs no system checks: run them here, so that a server set up wrongly (static files
# not collected) stops at start with the reason instead of answering 500.
call_command("check", fail_level="ERROR")
