"""Keeps the tracking server's built-in AI Gateway endpoints equal to the chat models the stack
serves, so that MLflow 3's Playground, AI Gateway page and judges can use the local models.

Runs as its own compose service (`endpoint-sync`, start.py), one process, so one writer changes
the endpoints. Every SYNC_INTERVAL_S it reads the chat endpoints of our gateway
(`GET <gateway>/api/2.0/endpoints/`, the list the Prompt Engineering UI shows) and, through the
tracking server's public REST API (`/api/3.0/mlflow/gateway/...`, as admin when basic auth is on):

- creates a missing one under the same name: provider `openai`, model = the endpoint's name,
  `api_base` = our gateway's OpenAI-compatible `/v1` (one secret for all of them; the README's
  "Playground" section says why the built-in gateway calls our gateway rather than the engines);
- deletes one the stack created (tag MANAGED_TAG) whose model is no longer served;
- leaves every other endpoint alone: a user's own endpoint keeps its name, even one that collides.

Restarts are idempotent: what exists is found by name and tag, not remembered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import requests

from endpoint_sync.health import HEARTBEAT, beat
from endpoint_sync.settings import EndpointSyncSettings

_logger = logging.getLogger("ai-gateway-endpoints")

MANAGED_TAG = "promptlab-stack.managed"
SECRET_NAME = "promptlab-stack-gateway"
MODEL_DEFINITION_PREFIX = "promptlab-stack-"
# The legacy gateway needs no key; the `openai` provider sends one anyway.
PLACEHOLDER_API_KEY = "unused"
SYNC_INTERVAL_S = 15.0
RETRY_INTERVAL_S = 2.0
TIMEOUT_S = 10.0

API = "/api/3.0/mlflow/gateway"


def served_chat_endpoints(gateway_url: str, session: requests.Session) -> list[str]:
    """The chat endpoints of our gateway, in its order (models, then external endpoints)."""
    r = session.get(f"{gateway_url.rstrip('/')}/api/2.0/endpoints/", timeout=TIMEOUT_S)
    r.raise_for_status()
    return [
        e["name"] for e in r.json().get("endpoints", []) if e.get("endpoint_type") == "llm/v1/chat"
    ]


class TrackingGatewayAPI:
    """The few calls of the tracking server's AI Gateway REST API this sync makes."""

    def __init__(self, tracking_url: str, session: requests.Session, auth=None) -> None:
        self.base = tracking_url.rstrip("/") + API
        self.session = session
        self.auth = auth

    def _call(self, method: str, path: str, **kwargs) -> dict:
        r = self.session.request(
            method, self.base + path, auth=self.auth, timeout=TIMEOUT_S, **kwargs
        )
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {API}{path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else {}

    def endpoints(self) -> list[dict]:
        return self._call("GET", "/endpoints/list").get("endpoints", [])

    def model_definitions(self) -> list[dict]:
        return self._call("GET", "/model-definitions/list").get("model_definitions", [])

    def secrets(self) -> list[dict]:
        return self._call("GET", "/secrets/list").get("secrets", [])

    def ensure_secret(self, api_base: str) -> str:
        """The stack's one secret, pointing at `api_base`; returns its id."""
        for s in self.secrets():
            if s["secret_name"] == SECRET_NAME:
                if (s.get("auth_config") or {}).get("api_base") != api_base:
                    self._call(
                        "POST",
                        "/secrets/update",
                        json={"secret_id": s["secret_id"], "auth_config": {"api_base": api_base}},
                    )
                return s["secret_id"]
        created = self._call(
            "POST",
            "/secrets/create",
            json={
                "secret_name": SECRET_NAME,
                "provider": "openai",
                "secret_value": {"api_key": PLACEHOLDER_API_KEY},
                "auth_config": {"api_base": api_base},
            },
        )
        return created["secret"]["secret_id"]

    def create_endpoint(self, name: str, secret_id: str, definitions: dict[str, str]) -> None:
        definition_name = MODEL_DEFINITION_PREFIX + name
        definition_id = definitions.get(definition_name)
        if definition_id is None:
            definition_id = self._call(
                "POST",
                "/model-definitions/create",
                json={
                    "name": definition_name,
                    "secret_id": secret_id,
                    "provider": "openai",
                    "model_name": name,
                },
            )["model_definition"]["model_definition_id"]
        endpoint = self._call(
            "POST",
            "/endpoints/create",
            json={
                "name": name,
                "model_configs": [
                    {"model_definition_id": definition_id, "linkage_type": "PRIMARY", "weight": 1.0}
                ],
            },
        )["endpoint"]
        self._call(
            "POST",
            "/endpoints/set-tag",
            json={"endpoint_id": endpoint["endpoint_id"], "key": MANAGED_TAG, "value": "true"},
        )

    def delete_endpoint(self, endpoint: dict) -> None:
        self._call("DELETE", "/endpoints/delete", json={"endpoint_id": endpoint["endpoint_id"]})
        for mapping in endpoint.get("model_mappings", []):
            definition = mapping.get("model_definition") or {}
            if definition.get("name", "").startswith(MODEL_DEFINITION_PREFIX):
                self._call(
                    "DELETE",
                    "/model-definitions/delete",
                    json={"model_definition_id": definition["model_definition_id"]},
                )


def is_managed(endpoint: dict) -> bool:
    return any(
        t.get("key") == MANAGED_TAG and t.get("value") == "true" for t in endpoint.get("tags", [])
    )


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # a user's endpoint holds the name


def sync_once(api: TrackingGatewayAPI, served: list[str], api_base: str) -> SyncResult:
    result = SyncResult()
    secret_id = api.ensure_secret(api_base)
    existing = {e["name"]: e for e in api.endpoints()}
    definitions = {d["name"]: d["model_definition_id"] for d in api.model_definitions()}
    for name in served:
        if name not in existing:
            api.create_endpoint(name, secret_id, definitions)
            result.created.append(name)
        elif not is_managed(existing[name]):
            result.left_alone.append(name)
    for name, endpoint in existing.items():
        if is_managed(endpoint) and name not in served:
            api.delete_endpoint(endpoint)
            result.deleted.append(name)
    return result


class EndpointSync:
    """The sync's passes: quickly until the first success, then every SYNC_INTERVAL_S. Each pass
    logs what changed (a failure once, until it changes) and leaves a heartbeat (health.py)."""

    def __init__(
        self, settings: EndpointSyncSettings, tracking_url: str, heartbeat: Path = HEARTBEAT
    ) -> None:
        self.session = requests.Session()
        # UTF-8, as MLflow decodes Basic credentials (requests would encode them as Latin-1).
        auth = (
            (
                settings.mlflow_auth_admin_username.encode(),
                settings.mlflow_auth_admin_password.encode(),
            )
            if settings.basic_auth
            else None
        )
        self.api = TrackingGatewayAPI(tracking_url, self.session, auth)
        self.gateway_url = settings.mlflow_deployments_target
        self.api_base = settings.gateway_api_base
        self.heartbeat = heartbeat
        self.synced = False
        self.last_error: str | None = None
        self.warned: set[str] = set()

    def step(self) -> float:
        """One pass; returns the seconds to wait before the next."""
        try:
            served = served_chat_endpoints(self.gateway_url, self.session)
            result = sync_once(self.api, served, self.api_base)
        except (requests.RequestException, RuntimeError, KeyError, ValueError) as e:
            error = f"{type(e).__name__}: {e}"
            if error != self.last_error:
                # At start the server and our gateway are still coming up: only news after that.
                log = _logger.warning if self.synced else _logger.info
                log("AI Gateway endpoints not synced (retrying): %s", error)
                self.last_error = error
            beat(f"not synced (retrying): {error}", self.heartbeat)
        else:
            recovered = self.last_error is not None
            self.last_error = None
            for name in result.created:
                _logger.info(
                    "AI Gateway endpoint %s registered (-> %s, model %s)", name, self.api_base, name
                )
            for name in result.deleted:
                _logger.info("AI Gateway endpoint %s removed: the stack no longer serves it", name)
            for name in set(result.left_alone) - self.warned:
                _logger.warning(
                    "AI Gateway endpoint %s exists and is not the stack's: left alone", name
                )
            self.warned |= set(result.left_alone)
            in_sync = ", ".join(served) or "none"
            if not self.synced or recovered:
                _logger.info("AI Gateway endpoints in sync: %s", in_sync)
            self.synced = True
            beat(f"in sync: {in_sync}", self.heartbeat)
        return SYNC_INTERVAL_S if self.synced else RETRY_INTERVAL_S
