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

Restarts are idempotent: what exists is found, not remembered. It is found by ownership, not by
name (issue 25): the sync only uses a secret, model definition or endpoint that is its own
(ownership.py: it names no other creator and, with basic auth, no one but an admin can change it),
checked again on every pass, with the content the sync writes:
- secret: provider `openai`, `auth_config` = {"api_base": our gateway}, one key, `api_key`;
- model definition: provider `openai`, model = the endpoint's name, secret = the sync's secret;
- endpoint: tag MANAGED_TAG, one PRIMARY model, the sync's definition for it.
Its own object whose content changed is set back (a warning says so). Another's object under the
stack's name is never used: a warning names it and what to do, and the sync makes its own under a
fresh name (`<name>-<8 hex digits>`; secrets and definitions are never shown in the Playground).
An endpoint name cannot move: another's endpoint under a model's name is left alone, with a warning.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import requests

from endpoint_sync.health import HEARTBEAT, beat
from endpoint_sync.ownership import DEFINITION, ENDPOINT, SECRET, Owners
from endpoint_sync.settings import EndpointSyncSettings

_logger = logging.getLogger("ai-gateway-endpoints")

MANAGED_TAG = "promptlab-stack.managed"
SECRET_NAME = "promptlab-stack-gateway"
MODEL_DEFINITION_PREFIX = "promptlab-stack-"
PROVIDER = "openai"
# The legacy gateway needs no key; the `openai` provider sends one anyway.
PLACEHOLDER_API_KEY = "unused"
SYNC_INTERVAL_S = 15.0
RETRY_INTERVAL_S = 2.0
TIMEOUT_S = 10.0

API = "/api/3.0/mlflow/gateway"
USERS_API = "/api/2.0/mlflow/users/list"
WHAT_TO_DO = (
    "find out who made it and why; delete it (AI Gateway page) if no one needs it, "
    "or leave it: the stack does not use it"
)


def served_chat_endpoints(gateway_url: str, session: requests.Session) -> list[str]:
    """The chat endpoints of our gateway, in its order (models, then external endpoints)."""
    r = session.get(f"{gateway_url.rstrip('/')}/api/2.0/endpoints/", timeout=TIMEOUT_S)
    r.raise_for_status()
    return [
        e["name"] for e in r.json().get("endpoints", []) if e.get("endpoint_type") == "llm/v1/chat"
    ]


def fresh_name(name: str) -> str:
    """`name` with a suffix no one can have taken in advance."""
    return f"{name}-{secrets.token_hex(4)}"


def is_fresh_name(candidate: str, name: str) -> bool:
    return re.fullmatch(re.escape(name) + r"-[0-9a-f]{8}", candidate) is not None


class TrackingGatewayAPI:
    """The few calls of the tracking server's AI Gateway REST API this sync makes.

    `user`: the user the sync logs in as (basic auth), stamped as the creator of what it makes."""

    def __init__(
        self, tracking_url: str, session: requests.Session, auth=None, user: str | None = None
    ) -> None:
        self.root = tracking_url.rstrip("/")
        self.session = session
        self.auth = auth
        self.user = user

    def _call(self, method: str, path: str, api: str = API, **kwargs) -> dict:
        r = self.session.request(
            method, self.root + api + path, auth=self.auth, timeout=TIMEOUT_S, **kwargs
        )
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {api}{path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else {}

    def endpoints(self) -> list[dict]:
        return self._call("GET", "/endpoints/list").get("endpoints", [])

    def model_definitions(self) -> list[dict]:
        return self._call("GET", "/model-definitions/list").get("model_definitions", [])

    def secrets(self) -> list[dict]:
        return self._call("GET", "/secrets/list").get("secrets", [])

    def owners(self) -> Owners:
        """Who besides the admins may change what (with basic auth: one call, admins only)."""
        if self.auth is None:
            return Owners()
        return Owners.from_users(self.user, self._call("GET", "", api=USERS_API).get("users", []))

    def _creator(self) -> dict:
        return {"created_by": self.user} if self.user else {}

    def create_secret(self, name: str, api_base: str) -> dict:
        return self._call(
            "POST",
            "/secrets/create",
            json={
                "secret_name": name,
                "provider": PROVIDER,
                "secret_value": {"api_key": PLACEHOLDER_API_KEY},
                "auth_config": {"api_base": api_base},
                **self._creator(),
            },
        )["secret"]

    def reset_secret(self, secret_id: str, api_base: str) -> None:
        self._call(
            "POST",
            "/secrets/update",
            json={
                "secret_id": secret_id,
                "secret_value": {"api_key": PLACEHOLDER_API_KEY},
                "auth_config": {"api_base": api_base},
            },
        )

    def create_definition(self, name: str, secret_id: str, model: str) -> dict:
        return self._call(
            "POST",
            "/model-definitions/create",
            json={
                "name": name,
                "secret_id": secret_id,
                "provider": PROVIDER,
                "model_name": model,
                **self._creator(),
            },
        )["model_definition"]

    def reset_definition(self, definition_id: str, secret_id: str, model: str) -> None:
        self._call(
            "POST",
            "/model-definitions/update",
            json={
                "model_definition_id": definition_id,
                "secret_id": secret_id,
                "provider": PROVIDER,
                "model_name": model,
            },
        )

    def create_endpoint(self, name: str, definition_id: str) -> None:
        endpoint = self._call(
            "POST",
            "/endpoints/create",
            json={"name": name, "model_configs": primary(definition_id), **self._creator()},
        )["endpoint"]
        self._call(
            "POST",
            "/endpoints/set-tag",
            json={"endpoint_id": endpoint["endpoint_id"], "key": MANAGED_TAG, "value": "true"},
        )

    def point_endpoint(self, endpoint: dict, definition_id: str) -> None:
        self._call(
            "POST",
            "/endpoints/update",
            json={"endpoint_id": endpoint["endpoint_id"], "model_configs": primary(definition_id)},
        )

    def delete_endpoint(self, endpoint: dict, definition_ids: list[str]) -> None:
        """Deletes `endpoint`, then the model definitions `definition_ids` (the sync's own)."""
        self._call("DELETE", "/endpoints/delete", json={"endpoint_id": endpoint["endpoint_id"]})
        for definition_id in definition_ids:
            self._call(
                "DELETE", "/model-definitions/delete", json={"model_definition_id": definition_id}
            )


def primary(definition_id: str) -> list[dict]:
    return [{"model_definition_id": definition_id, "linkage_type": "PRIMARY", "weight": 1.0}]


def is_managed(endpoint: dict) -> bool:
    """Carries the stack's tag (which anyone may set on their own endpoint: see Owners)."""
    return any(
        t.get("key") == MANAGED_TAG and t.get("value") == "true" for t in endpoint.get("tags", [])
    )


def mapped_definitions(endpoint: dict) -> list[str]:
    return [m.get("model_definition_id", "") for m in endpoint.get("model_mappings", [])]


def uses_only(endpoint: dict, definition_id: str) -> bool:
    """The endpoint calls one model: `definition_id` (what the sync registers)."""
    mappings = [
        (m.get("model_definition_id"), m.get("linkage_type"))
        for m in endpoint.get("model_mappings", [])
    ]
    return mappings == [(definition_id, "PRIMARY")]


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # a user's endpoint holds the name
    # Objects under the stack's names that are not the stack's: never used (warnings).
    refused: list[str] = field(default_factory=list)
    # The stack's own objects that had been changed, set back (warnings).
    restored: list[str] = field(default_factory=list)


def our_secret(api: TrackingGatewayAPI, owners: Owners, api_base: str, result: SyncResult) -> dict:
    """The sync's secret, pointing at `api_base`: an existing one of its own, else a new one."""
    ours: list[dict] = []
    others: list[tuple[dict, str]] = []
    taken = set()
    for s in api.secrets():
        name = s.get("secret_name", "")
        taken.add(name)
        if name != SECRET_NAME and not is_fresh_name(name, SECRET_NAME):
            continue
        why = owners.not_ours(SECRET, s)
        if why is None and s.get("provider") != PROVIDER:
            why = f"its provider is {s.get('provider')!r}"
        if why is None:
            ours.append(s)
        else:
            others.append((s, why))
    if ours:
        ours.sort(key=lambda s: (s["secret_name"] != SECRET_NAME, s.get("created_at", 0)))
        secret = ours[0]
        if (secret.get("auth_config") or {}) != {"api_base": api_base} or set(
            secret.get("masked_values") or {}
        ) != {"api_key"}:
            api.reset_secret(secret["secret_id"], api_base)
            result.restored.append(
                f"AI Gateway secret {secret['secret_name']!r} had been changed (api_base or "
                f"keys): set back to the stack's gateway {api_base} (MLFLOW_DEPLOYMENTS_TARGET "
                "changed, or someone changed the secret)"
            )
    else:
        name = fresh_name(SECRET_NAME) if SECRET_NAME in taken else SECRET_NAME
        secret = api.create_secret(name, api_base)
    for s, why in others:
        result.refused.append(
            f"AI Gateway secret {s['secret_name']!r} ({s.get('secret_id')}) is not the stack's "
            f"({why}): never used; the stack's endpoints use the stack's own secret "
            f"{secret['secret_name']!r}. {WHAT_TO_DO}"
        )
    return secret


def our_definition(
    api: TrackingGatewayAPI,
    owners: Owners,
    model: str,
    secret_id: str,
    definitions: dict[str, dict],
    endpoint: dict | None,
    result: SyncResult,
) -> str:
    """The id of the sync's model definition for `model` on `secret_id`: one of its own named for
    `model` (the one its endpoint uses first), set back if it changed; else a new one."""
    name = MODEL_DEFINITION_PREFIX + model
    in_use = set(mapped_definitions(endpoint or {}))

    def named_for_model(d: dict) -> bool:
        n = d.get("name", "")
        return n == name or (is_fresh_name(n, name) and d.get("model_name") == model)

    candidates = sorted(
        (
            d
            for d in definitions.values()
            if d["model_definition_id"] in in_use or named_for_model(d)
        ),
        key=lambda d: (
            d["model_definition_id"] not in in_use,
            d.get("name") != name,
            d.get("created_at", 0),
        ),
    )
    mine = [d for d in candidates if named_for_model(d) and owners.not_ours(DEFINITION, d) is None]
    if mine:
        definition = mine[0]
        wanted = (PROVIDER, model, secret_id)
        if (
            definition.get("provider"),
            definition.get("model_name"),
            definition.get("secret_id"),
        ) != wanted:
            api.reset_definition(definition["model_definition_id"], secret_id, model)
            result.restored.append(
                f"AI Gateway model definition {definition['name']!r} had been changed (provider, "
                f"model or secret): set back to {PROVIDER} {model!r} on the stack's secret"
            )
    else:
        taken = any(d.get("name") == name for d in definitions.values())
        definition = api.create_definition(fresh_name(name) if taken else name, secret_id, model)
        definitions[definition["model_definition_id"]] = definition
    for other in candidates:
        if (why := owners.not_ours(DEFINITION, other)) is not None:
            result.refused.append(
                f"AI Gateway model definition {other.get('name')!r} "
                f"({other.get('model_definition_id')}) is not the stack's ({why}): never used; "
                f"endpoint {model} uses the stack's own definition {definition['name']!r}. "
                f"{WHAT_TO_DO}"
            )
    return definition["model_definition_id"]


def sync_once(api: TrackingGatewayAPI, served: list[str], api_base: str) -> SyncResult:
    result = SyncResult()
    owners = api.owners()
    secret_id = our_secret(api, owners, api_base, result)["secret_id"]
    definitions = {d["model_definition_id"]: d for d in api.model_definitions()}
    existing = {e["name"]: e for e in api.endpoints()}
    for name in served:
        endpoint = existing.get(name)
        if endpoint is not None:
            if not is_managed(endpoint):
                result.left_alone.append(name)
                continue
            if why := owners.not_ours(ENDPOINT, endpoint):
                result.refused.append(
                    f"AI Gateway endpoint {name} carries the stack's tag but is not the stack's "
                    f"({why}): left alone, and the stack cannot register {name} while it exists. "
                    "Find out who made it and why; delete it (AI Gateway page) so that the stack "
                    "registers its own"
                )
                continue
        definition_id = our_definition(api, owners, name, secret_id, definitions, endpoint, result)
        if endpoint is None:
            api.create_endpoint(name, definition_id)
            result.created.append(name)
        elif not uses_only(endpoint, definition_id):
            api.point_endpoint(endpoint, definition_id)
            result.restored.append(
                f"AI Gateway endpoint {name} had been changed to other models: set back to "
                f"the stack's model definition {definitions[definition_id]['name']!r}"
            )
    for name, endpoint in existing.items():
        if name in served or not is_managed(endpoint) or owners.not_ours(ENDPOINT, endpoint):
            continue
        elsewhere = {
            d for e in existing.values() if e is not endpoint for d in mapped_definitions(e)
        }
        mine = [
            d
            for d in mapped_definitions(endpoint)
            if d in definitions
            and d not in elsewhere
            and definitions[d].get("name", "").startswith(MODEL_DEFINITION_PREFIX)
            and owners.not_ours(DEFINITION, definitions[d]) is None
        ]
        api.delete_endpoint(endpoint, mine)
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
        user = settings.mlflow_auth_admin_username if settings.basic_auth else None
        self.api = TrackingGatewayAPI(tracking_url, self.session, auth, user)
        self.gateway_url = settings.mlflow_deployments_target
        self.api_base = settings.gateway_api_base
        self.heartbeat = heartbeat
        self.synced = False
        self.last_error: str | None = None
        self.warned: set[str] = set()
        self.refused: set[str] = set()  # what the last pass reported as not the stack's

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
            # A change set back is news every time; another's object once, while it stays.
            for message in result.restored:
                _logger.warning("%s", message)
            for message in result.refused:
                if message not in self.refused:
                    _logger.warning("%s", message)
            self.refused = set(result.refused)
            in_sync = ", ".join(served) or "none"
            if not self.synced or recovered:
                _logger.info("AI Gateway endpoints in sync: %s", in_sync)
            self.synced = True
            status = f"in sync: {in_sync}"
            if result.refused:
                status += f"; not the stack's, never used: {len(result.refused)} (see the log)"
            beat(status, self.heartbeat)
        return SYNC_INTERVAL_S if self.synced else RETRY_INTERVAL_S
