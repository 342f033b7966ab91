from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Benchmark: nnU-Net export and evaluation of predictions"
