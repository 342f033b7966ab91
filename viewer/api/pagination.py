"""Page-number pagination of the API's lists (cases, and the inference app's uploads and jobs)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class CasePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request):
        """``page_size`` if given (at most :attr:`max_page_size`), else the default; a value that
        is not a positive whole number is a 400 naming it (DRF would silently use the default)."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError(
                {self.page_size_query_param: [f"{raw!r} is not a positive whole number"]}
            )
        return min(int(raw), self.max_page_size)
