"""A login-only dataset's evaluation runs tell anonymous visitors nothing about which cases they
hold (issue 14, item 7): every case answers alike, before any lookup."""

import pytest

from evaluation.models import OK, CaseResult
from tests.evaluation.test_pages import LUMBARIZED

pytestmark = pytest.mark.django_db


def test_anonymous_requests_get_the_same_answer_for_every_case(client, evaluated_run, settings):
    run = evaluated_run.run
    evaluated = CaseResult.objects.get(run=run, case_id=LUMBARIZED)
    assert evaluated.status == OK
    not_evaluated = CaseResult.objects.exclude(status=OK).filter(run=run).first()
    assert not_evaluated is not None  # the run holds a case it could not evaluate
    settings.CTSPINE_PUBLIC_DATASET = False
    answers = set()
    for case_id in (LUMBARIZED, not_evaluated.case_id, "no_such_case"):
        for url in (
            f"/api/evaluations/{run.pk}/cases/{case_id}/volume/",
            f"/api/evaluations/{run.pk}/cases/{case_id}/slices/axial/0.png",
            f"/api/evaluations/{run.pk}/cases/{case_id}/voxel/?plane=axial&index=0&x=0&y=0",
        ):
            response = client.get(url)
            answers.add((response.status_code, response.content))
        page = client.get(f"/evaluations/{run.pk}/cases/{case_id}/")
        assert page.status_code == 302 and "/accounts/login/" in page["Location"]
    assert answers == {(403, b'{"error": "Sign in to see the dataset."}')}
