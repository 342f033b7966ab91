"""Path converters shared by every app's URLs; importing this module registers them."""

from django.urls import register_converter


class ImageExtension:
    """``png``, ``webp``, ``jpg`` or ``jpeg``: the tile formats."""

    regex = "png|webp|jpg|jpeg"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(ImageExtension, "ext")
