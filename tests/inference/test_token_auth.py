"""Scripts authenticate with a token (issue 14, item 8): every API, file and tile endpoint of a
job accepts ``Authorization: Token <key>``, without a session or a CSRF token."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from inference.models import SegmentationJob
from tests.inference.test_jobs import finished_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def script(user) -> Client:
    """A client with alice's token and no session; CSRF enforced, as for a real script."""
    token = Token.objects.create(user=user)
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token.key}")


def test_token_opens_the_api_files_and_tiles_of_ones_own_job(
    script, user, model, phantom_files, tmp_path
):
    job = finished_job(user, phantom_files, tmp_path)
    assert script.get("/api/jobs/").json()["count"] == 1
    assert script.get(f"/api/jobs/{job.pk}/").json()["status"] == "succeeded"
    download = script.get(f"/api/jobs/{job.pk}/files/prediction/")
    assert download.status_code == 200
    assert (
        download["Content-Disposition"] == f'attachment; filename="job{job.pk}-prediction.nii.gz"'
    )
    assert script.get(f"/api/jobs/{job.pk}/volume/").json()["shape"] == [64, 64, 48]
    tile = script.get(f"/api/jobs/{job.pk}/slices/axial/10.png?layer=labels")
    assert tile.status_code == 200 and tile["Content-Type"] == "image/png"


def test_token_writes_without_a_csrf_token(script, user, model, phantom_files, tmp_path):
    job = finished_job(user, phantom_files, tmp_path)
    queued = script.post(
        "/api/jobs/", {"upload_id": job.upload_id}, content_type="application/json"
    )
    assert queued.status_code == 201, queued.content
    cancelled = script.post(f"/api/jobs/{queued.json()['id']}/cancel/")
    assert cancelled.json()["status"] == "cancelled"


def test_a_wrong_token_is_refused_everywhere(user, model, phantom_files, tmp_path):
    job = finished_job(user, phantom_files, tmp_path)
    forged = Client(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    for url in (
        f"/api/jobs/{job.pk}/",
        f"/api/jobs/{job.pk}/files/image/",
        f"/api/jobs/{job.pk}/volume/",
    ):
        response = forged.get(url)
        assert response.status_code == 401, url
        assert response.json()["error"] == "Invalid token."
    assert SegmentationJob.objects.count() == 1


def test_a_script_gets_its_token_with_its_password(user, client):
    response = client.post("/api/auth-token/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=user).key
    refused = client.post("/api/auth-token/", {"username": "alice", "password": "wrong"})
    assert refused.status_code == 400
