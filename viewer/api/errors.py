"""The API's error shape, for every app's DRF views (settings ``REST_FRAMEWORK``).

Every error body has ``error``: a message for the user (what the viewer's JavaScript shows). A
400 from a serializer or a search filter also names the first bad parameter in ``field`` and
keeps each bad parameter's messages under its own name, as django-filter and DRF give them:
``{"error": "source: Select a valid choice.", "field": "source", "source": ["Select ..."]}``.
A message about the request as a whole (``non_field_errors``) is the ``error`` as it is.
Other errors keep DRF's ``detail`` beside ``error``.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, ValidationError):
        errors = data if isinstance(data, dict) else {api_settings.NON_FIELD_ERRORS_KEY: data}
        field, messages = next(iter(errors.items()))
        text = " ".join(map(str, messages if isinstance(messages, list) else [messages]))
        # A message about the request as a whole names no parameter.
        error = text if field == api_settings.NON_FIELD_ERRORS_KEY else f"{field}: {text}"
        response.data = {"error": error, "field": field, **errors}
    elif isinstance(data, dict) and "detail" in data:
        response.data = {"error": str(data["detail"]), **data}
    return response
