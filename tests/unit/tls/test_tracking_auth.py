"""The tls proxy asks the tracking server whether it wants a login (tls/tracking_auth.py), against
a real `mlflow server` with and without basic auth."""

from __future__ import annotations

from loopback import free_port
from tracking_server import tracking_server

from tls.tracking_auth import basic_auth_on


def test_the_answer_is_what_an_anonymous_browser_meets(tmp_path):
    (tmp_path / "open").mkdir()
    with tracking_server(tmp_path / "open") as (_, url):
        assert basic_auth_on(url) is False
    (tmp_path / "auth").mkdir()
    with tracking_server(tmp_path / "auth", MLFLOW_AUTH_ADMIN_PASSWORD="team-password-1234") as (
        _,
        url,
    ):
        assert basic_auth_on(url) is True
    assert basic_auth_on(f"http://127.0.0.1:{free_port()}", timeout_s=2) is None
