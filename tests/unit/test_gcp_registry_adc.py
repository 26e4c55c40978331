"""The registry protocol on Artifact Registry authenticates with Application Default Credentials.

One local fake plays three parts: Google's OAuth token endpoint (which google-auth's
real `authorized_user` credentials refresh against, through `token_uri`), a registry
that challenges with `Bearer realm=…`, and its token service, which accepts only
`oauth2accesstoken` with the access token google-auth obtained.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("google.auth")

from pipeline import gcp
from pipeline.errors import Unavailable
from pipeline.publish.oci import Registry
from tests.gcpfakes.rest import FakeRequest, FakeResponse, FakeRestServer

ACCESS_TOKEN = "ya29.fake-access-token"
MEDIA = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": MEDIA, "layers": []}).encode()


class FakeGoogleRegistry(FakeRestServer):
    def __init__(self) -> None:
        super().__init__()
        self.refresh_answer: tuple[int, dict[str, object]] = (
            200,
            {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"},
        )
        self.route("POST", r"/oauth2/token")(self._oauth)
        self.route("GET", r"/v2/token")(self._token)
        self.route("GET", r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)")(self._manifest)

    def _oauth(self, request: FakeRequest) -> FakeResponse:
        status, body = self.refresh_answer
        return FakeResponse(status, json.dumps(body).encode())

    def _token(self, request: FakeRequest) -> FakeResponse:
        expected = "Basic " + base64.b64encode(f"oauth2accesstoken:{ACCESS_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return FakeResponse(403, b'{"errors": [{"code": "DENIED"}]}')
        return FakeResponse(200, json.dumps({"token": "registry-token"}).encode())

    def _manifest(self, request: FakeRequest) -> FakeResponse:
        if request.headers.get("authorization") != "Bearer registry-token":
            realm = f"{self.endpoint}/v2/token"
            challenge = f'Bearer realm="{realm}",service="fake-docker.pkg.dev",scope="repository:{request.groups["repo"]}:pull"'
            return FakeResponse(401, b"{}", headers={"WWW-Authenticate": challenge})
        digest = "sha256:" + hashlib.sha256(BODY).hexdigest()
        return FakeResponse(200, BODY, MEDIA, {"Docker-Content-Digest": digest})


def _adc_file(tmp_path: Path, fake: FakeRestServer) -> Path:
    """A service account key whose `token_uri` is the fake (google-auth honours it for these keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = tmp_path / "service-account.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "proj",
                "private_key_id": "key-1",
                "private_key": pem,
                "client_email": "envctl@proj.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{fake.endpoint}/oauth2/token",
            }
        )
    )
    return key


def test_artifact_registry_hosts_use_adc_and_others_do_not() -> None:
    assert Registry("europe-west4-docker.pkg.dev", timeout=5).google_adc
    assert not Registry("localhost:5000", timeout=5).google_adc
    assert not Registry("ghcr.io", timeout=5).google_adc
    assert gcp.is_artifact_registry("us-docker.pkg.dev")


def test_a_manifest_is_read_with_an_access_token_from_adc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGoogleRegistry() as fake:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_adc_file(tmp_path, fake)))
        registry = Registry(f"127.0.0.1:{fake.port}", timeout=5, google_adc=True)
        manifest = registry.manifest("proj/repo/team.task", "production")
        assert manifest is not None and manifest.body == BODY
        assert [r.path for r in fake.sent("POST")] == ["/oauth2/token"]  # refreshed once, when asked
        assert fake.sent("GET", r"/v2/token")[-1].query["scope"] == ["repository:proj/repo/team.task:pull"]
        assert ACCESS_TOKEN not in repr(registry)
        registry.manifest("proj/repo/team.task", "staging")
        assert len(fake.sent("POST")) == 1


def test_expired_credentials_exit_3_naming_the_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGoogleRegistry() as fake:
        fake.refresh_answer = (
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        )
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_adc_file(tmp_path, fake)))
        registry = Registry(f"127.0.0.1:{fake.port}", timeout=5, google_adc=True)
        with pytest.raises(Unavailable) as failed:
            registry.manifest("proj/repo/team.task", "production")
        assert failed.value.exit_code == 3
        message = str(failed.value)
        assert "gcloud auth application-default login" in message and "\n" not in message
        assert "PRIVATE KEY" not in message


def test_missing_credentials_exit_3_naming_the_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(Unavailable, match="gcloud auth application-default login") as failed:
        gcp.access_token()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(failed.value)


def test_a_credentials_error_raised_inside_an_api_call_names_the_login() -> None:
    """The refresh an API client does before its request raises google.auth's own errors."""
    from google.auth import exceptions as auth_errors

    error = gcp.translate(
        auth_errors.RefreshError("invalid_grant: Token has been expired or revoked."),
        "Artifact Registry repository repo",
        api="artifactregistry",
    )
    assert isinstance(error, Unavailable) and error.exit_code == 3
    assert "gcloud auth application-default login" in str(error) and "GOOGLE_APPLICATION_CREDENTIALS" in str(
        error
    )
    assert gcp.translate(ValueError("not Google's"), "x", api="artifactregistry") is None


def test_the_test_stage_pulls_from_artifact_registry_with_an_adc_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On gcp the notebooks run on the pipeline step's Docker Engine, which pulls with ADC."""
    from pipeline.testing.runner import pull_auth

    assert pull_auth("localhost:5000/nlp.x@sha256:" + "a" * 64) is None  # `docker login` covers these
    with FakeGoogleRegistry() as fake:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_adc_file(tmp_path, fake)))
        auth = pull_auth("europe-west4-docker.pkg.dev/proj/images/nlp.x@sha256:" + "a" * 64)
    assert auth == {"username": "oauth2accesstoken", "password": ACCESS_TOKEN}
