"""Token authentication for scripts, on every endpoint: the API, file downloads and tiles.

DRF's ``TokenAuthentication`` only runs inside DRF views; file downloads and tiles are plain
Django views. This middleware authenticates an ``Authorization: Token <key>`` header (DRF's
authtoken keys, made with ``manage.py drf_create_token USER`` or ``POST /api/auth-token/``) before
any view runs. A token request carries no cookie a browser could send on its own, so it needs no
CSRF token either.
"""

from __future__ import annotations

from django.http import JsonResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class TokenAuthenticationMiddleware:
    """Sets ``request.user`` from a valid token; answers 401 for an invalid one. Install after
    ``AuthenticationMiddleware`` and before ``CsrfViewMiddleware`` runs its view check."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.authentication = TokenAuthentication()

    def __call__(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header.split(" ", 1)[0].lower() == self.authentication.keyword.lower():
            try:
                found = self.authentication.authenticate(request)
            except AuthenticationFailed as exc:
                return JsonResponse({"error": str(exc.detail)}, status=401)
            if found is not None:
                request.user = found[0]
                request._dont_enforce_csrf_checks = True
        return self.get_response(request)
