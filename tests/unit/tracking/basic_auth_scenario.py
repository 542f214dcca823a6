"""What a client gets from our tracking app with basic auth on: run by test_app.py in its own
process, with the environment the tracking image's start.py gives the server (MLflow's auth app
registers hooks on MLflow's global Flask app, which must not leak into other tests). Prints the
status of each request as one JSON line."""

from __future__ import annotations

import base64
import json

from starlette.testclient import TestClient

from tracking.start import bootstrap_basic_auth

URL = "/api/2.0/mlflow/experiments/search?max_results=1"
PROXY = "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path=api/2.0/endpoints"


def auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def main() -> None:
    bootstrap_basic_auth()  # what start.py runs before the server
    from tracking.app import create_app

    client = TestClient(create_app(), base_url="http://localhost")

    def get(url, headers=None):
        return client.get(url, headers=headers).status_code

    admin = auth("admin", "s3cret-password")
    print(
        json.dumps(
            {
                "anonymous": get(URL),
                "wrong": get(URL, auth("admin", "nope")),
                "admin": get(URL, admin),
                "proxy_anonymous": get(PROXY),
                "proxy_wrong": get(PROXY, auth("admin", "nope")),
                # Past the login, the proxy answers: its gateway (port 9) is down.
                "proxy_admin": get(PROXY, admin),
            }
        )
    )


if __name__ == "__main__":
    main()
