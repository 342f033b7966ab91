"""Settings: ``base`` reads every environment variable (the one place that does); ``dev``,
``production`` and ``test`` only adjust it. ``manage.py`` defaults to ``dev``."""
