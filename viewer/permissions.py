from django.conf import settings
from rest_framework.permissions import BasePermission


def dataset_visible_to(user) -> bool:
    """The dataset is public unless CTSPINE_PUBLIC_DATASET is off; then it needs a login."""
    return settings.CTSPINE_PUBLIC_DATASET or user.is_authenticated


class DatasetAccess(BasePermission):
    message = "Sign in to see the dataset."

    def has_permission(self, request, view):
        return dataset_visible_to(request.user)
