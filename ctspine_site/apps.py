from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The site itself, installed only to register its system checks."""

    name = "ctspine_site"

    def ready(self) -> None:
        from ctspine_site import checks  # noqa: F401  (registers the checks)
