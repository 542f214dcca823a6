"""MLflow's real server app (its Flask app, and the FastAPI app under uvicorn) with and without our
``promptlab`` plugin, each creating Prompt Engineering runs: run by test_promptlab_artifacts.py in
its own process, against a sqlite + --serve-artifacts store. ``mlflow.server`` builds its app and
caches stores and artifact repositories in module globals at import time; a process of its own
keeps all of that (and the wrapped view) out of the pytest process.

Usage: python promptlab_scenario.py WORK_DIR  (reads WORK_DIR/payload.json, writes
WORK_DIR/result.json)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

PROMPTLAB = "/ajax-api/2.0/mlflow/runs/create-promptlab-run"


class Collect(logging.Handler):
    """Keeps the warnings our package logs."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        self.into.append(self.format(record))


async def asgi_post(asgi_app, path: str, body: dict) -> dict:
    """A POST through raw ASGI calls, as uvicorn makes them."""
    data = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 5000),
        "headers": [
            (b"host", b"localhost:5000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ],
    }
    sent, never = [], asyncio.Event()

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": data, "more_body": False}
        await never.wait()

    messages = []

    async def send(message):
        messages.append(message)

    await asgi_app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    response = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return {"status": status, "body": response.decode()}


def scenario(work: Path) -> dict:
    payload = json.loads((work / "payload.json").read_text(encoding="utf-8"))
    result: dict = {"warnings": []}
    logging.getLogger("tracking").addHandler(Collect(result["warnings"]))

    from mlflow.server import _find_app, _is_factory, app

    import tracking.app as plugin
    import tracking.promptlab_artifacts as artifacts

    result["entry_point"] = _find_app("promptlab")
    result["is_factory"] = _is_factory(result["entry_point"])
    result["rules"] = sorted(
        r.rule for r in app.url_map.iter_rules() if r.rule.endswith(artifacts.ROUTE_SUFFIX)
    )
    client = app.test_client()

    def post(path, body):
        r = client.post(path, json=body)
        return {"status": r.status_code, "body": r.get_data(as_text=True)}

    def experiment(name, **extra):
        r = post("/ajax-api/2.0/mlflow/experiments/create", {"name": name, **extra})
        assert r["status"] == 200, r
        return json.loads(r["body"])["experiment_id"]

    proxied = experiment("proxied")
    direct = experiment("direct", artifact_location=(work / "direct").as_uri())
    bad = dict(payload)  # missing experiment_id -> 400

    # 1. MLflow's stock view (the upstream check).
    result["stock"] = post(PROMPTLAB, {**payload, "experiment_id": proxied})
    result["stock_bad"] = post(PROMPTLAB, bad)

    # 2. Our wrapper; create_app twice must not wrap twice.
    os.environ.pop("_MLFLOW_SGI_NAME", None)
    result["flask_returned"] = plugin.create_app() is app
    endpoints = artifacts.wrap_promptlab_views(app)
    views = [app.view_functions[e] for e in endpoints]
    plugin.create_app(app)
    result["idempotent"] = views == [app.view_functions[e] for e in endpoints] and not any(
        getattr(v.__wrapped__, artifacts._WRAPPED_MARKER, False) for v in views
    )
    result["wrapped"] = post(PROMPTLAB, {**payload, "experiment_id": proxied})
    result["wrapped_direct"] = post(PROMPTLAB, {**payload, "experiment_id": direct})
    result["wrapped_bad"] = post(PROMPTLAB, bad)

    # 3. Under uvicorn (mlflow server's default) the factory returns MLflow's FastAPI app,
    # which serves the Flask app (and our wrapper) through WSGI. Driven via raw ASGI calls.
    os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"
    asgi_app = plugin.create_app()
    result["uvicorn_app_type"] = f"{type(asgi_app).__module__}.{type(asgi_app).__qualname__}"
    result["uvicorn"] = asyncio.run(
        asgi_post(asgi_app, PROMPTLAB, {**payload, "experiment_id": proxied})
    )
    return result


def main() -> None:
    work = Path(sys.argv[1])
    (work / "result.json").write_text(json.dumps(scenario(work)), encoding="utf-8")
    # Skip ~2 s of interpreter teardown (MLflow's threads and pools); the results are written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
