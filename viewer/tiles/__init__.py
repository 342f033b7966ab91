"""The tile machinery of every subject the viewer shows (dataset case, job, evaluated case):
query parameters (params), responses (responses), the URL patterns and resolver protocol (urls),
the volume cache and file sets (volumes), the dataset-case resolver (case) and the ``<ext:>``
path converter (converters)."""
