"""Admin actions behind authentication: `streams.web.auth.AdminCheck`, and a real worker's POST /retrain and
POST /corrections with and without the credentials."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from streams.settings import Settings
from streams.topics import CORRECTIONS
from streams.web.auth import Admin, AdminCheck, Refusal, is_loopback
from tests.support import Broker, new_worker, read_values

# the web surface: its outcome does not depend on the broker (the Kafka suite leaves it out)
pytestmark = pytest.mark.surface

TOKEN = "tok-" + uuid.uuid4().hex
PASSWORD = "pw-" + uuid.uuid4().hex


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_bearer_token_lets_through_and_anything_else_is_401_with_a_challenge() -> None:
    check = AdminCheck(Settings(admin_token=TOKEN))
    assert check.check(f"Bearer {TOKEN}") == Admin("bearer")
    assert check.check(f"bearer   {TOKEN} ") == Admin("bearer")  # the scheme is case-insensitive
    for wrong in (None, "", f"Bearer {TOKEN}x", "Bearer", basic("admin", TOKEN), f"Token {TOKEN}"):
        refused = check.check(wrong)
        assert isinstance(refused, Refusal) and refused.status == 401, wrong
        assert refused.headers == {"WWW-Authenticate": 'Bearer realm="nomenclature"'}
        assert TOKEN not in refused.error


def test_http_basic_with_the_configured_user_and_password() -> None:
    check = AdminCheck(Settings(admin_user="ops", admin_password=PASSWORD, admin_token=TOKEN))
    assert check.check(basic("ops", PASSWORD)) == Admin("basic", "ops")
    assert check.check(f"Bearer {TOKEN}") == Admin("bearer")
    for wrong in (basic("ops", PASSWORD + "x"), basic("root", PASSWORD), "Basic !!notbase64", "Basic b3Bz"):
        refused = check.check(wrong)
        assert isinstance(refused, Refusal) and refused.status == 401, wrong
    challenge = check.check(None)
    assert isinstance(challenge, Refusal)
    assert challenge.headers["WWW-Authenticate"] == (
        'Bearer realm="nomenclature", Basic realm="nomenclature", charset="UTF-8"'
    )


def test_a_user_without_a_password_configures_nothing() -> None:
    check = AdminCheck(Settings(admin_user="ops", web_host="0.0.0.0"))
    assert not check.configured
    refused = check.check(basic("ops", ""))
    assert isinstance(refused, Refusal) and refused.status == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_without_a_secret_a_loopback_bind_answers(host: str) -> None:
    assert is_loopback(host)
    assert AdminCheck(Settings(web_host=host)).check(None) == Admin("loopback")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "worker.example"])
def test_without_a_secret_any_other_bind_is_refused_with_403(host: str) -> None:
    refused = AdminCheck(Settings(web_host=host)).check(f"Bearer {TOKEN}")
    assert isinstance(refused, Refusal) and refused.status == 403
    assert "NOMENCLATURE_ADMIN_TOKEN" in refused.error and host in refused.error


def test_the_secrets_are_not_in_the_settings_repr() -> None:
    shown = repr(Settings(admin_token=TOKEN, admin_user="ops", admin_password=PASSWORD))
    assert TOKEN not in shown and PASSWORD not in shown and "ops" in shown


def _post(
    port: int, path: str, body: Any, authorization: str | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_a_worker_with_a_token_guards_its_state_changing_endpoints_and_never_logs_the_secrets(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    worker = new_worker(broker, tmp_path, models_dir)
    worker.extra_env.update(
        NOMENCLATURE_ADMIN_TOKEN=TOKEN, NOMENCLATURE_ADMIN_USER="ops", NOMENCLATURE_ADMIN_PASSWORD=PASSWORD
    )
    worker.start()
    correction = {"id": f"auth-{uuid.uuid4().hex[:8]}", "label": "service", "name": "Ремонт"}
    try:
        worker.wait_ready()
        port = worker.web_port
        status, headers, body = _post(port, "/retrain", {"reason": "test"})
        assert (
            status == 401
            and "Bearer" in headers["WWW-Authenticate"]
            and "Basic" in headers["WWW-Authenticate"]
        )
        assert _post(port, "/retrain", {}, f"Bearer {TOKEN[:-1]}")[0] == 401
        assert _post(port, "/corrections", correction)[0] == 401
        assert _post(port, "/corrections", correction, basic("ops", "wrong"))[0] == 401
        status, _, body = _post(port, "/retrain", {"reason": "test"}, f"Bearer {TOKEN}")
        assert status == 202 and body["requested"] is True
        status, _, body = _post(port, "/corrections", correction, basic("ops", PASSWORD))
        assert status == 202 and body["published"] == 1, body
        # read-only views stay open
        assert worker.get("/models")["worker"]
        assert worker.get("/health")["model"]["version"]
    finally:
        worker.stop()
    published = [c for c in read_values(broker.bootstrap, CORRECTIONS) if c["id"] == correction["id"]]
    assert [c["user"] for c in published] == ["ops"], "the Basic user made the correction"
    log = worker.log_path.read_text(errors="replace")
    assert TOKEN not in log and PASSWORD not in log
