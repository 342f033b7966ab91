"""Who may see the dataset: one rule, as a DRF permission for the API and a decorator for pages.

The dataset is public unless ``CTSPINE_PUBLIC_DATASET`` is off; then it needs a login.
"""

from django.conf import settings
from django.contrib.auth.decorators import user_passes_test
from rest_framework.permissions import BasePermission


def dataset_visible_to(user) -> bool:
    return settings.CTSPINE_PUBLIC_DATASET or user.is_authenticated


class DatasetAccess(BasePermission):
    """API views (the default permission class in ``REST_FRAMEWORK``): 403 when not visible."""

    message = "Sign in to see the dataset."

    def has_permission(self, request, view):
        return dataset_visible_to(request.user)


#: Page views: redirect to the login page (and back) when the dataset is not visible.
dataset_page = user_passes_test(dataset_visible_to)
