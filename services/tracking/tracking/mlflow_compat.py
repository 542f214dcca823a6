"""Every private MLflow name, and every assumption about how MLflow builds its server app, that
the tracking server's plugin relies on, in one place (the operations commands keep theirs in
tracking_ops/mlflow_compat.py).

tests/unit/tracking/test_mlflow_compat.py exercises each of them and fails with a message naming
it when an MLflow upgrade moves or changes one; nothing else in this package imports a private
MLflow name.
"""

from __future__ import annotations

from contextlib import asynccontextmanager


def served_by_uvicorn() -> bool:
    """Whether `mlflow server` runs its default uvicorn (then it serves the FastAPI app that an
    app factory returns) rather than gunicorn or waitress (the Flask app).

    Why private: `mlflow server` passes the server type to app factories only through the
    `_MLFLOW_SGI_NAME` variable; MLflow's own `basic-auth` factory reads it the same way.
    """
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    return _MLFLOW_SGI_NAME.get() == "uvicorn"


def fastapi_basic_auth():
    """`authenticate(request)` for a native route when MLflow's basic auth is on: runs the
    configured authorization function in a Flask request context, as Flask does for its views.

    Why private: MLflow's auth middleware only guards the native routes it knows about, and the
    check it runs for those (`_authenticate_fastapi_request`) decodes Basic credentials as ASCII,
    so a non-ASCII password fails there. Neither is reported upstream yet.
    """
    from mlflow.server.auth import _authenticate_custom_for_fastapi

    return _authenticate_custom_for_fastapi


def validate_gateway_path(method: str, gateway_path) -> None:
    """MLflow's own check of the UI's gateway-proxy path (GET: the endpoint list, POST:
    gateway/<name>/invocations); raises MlflowException.

    Why private: our proxy replaces MLflow's `gateway_proxy_handler` (which answers every gateway
    error with a 500) and must refuse exactly the paths MLflow refuses.
    """
    from mlflow.server.handlers import _validate_gateway_path

    _validate_gateway_path(method, gateway_path)


def proxied_artifact_repo(artifact_uri: str):
    """`(repository, root path inside it or None)` for a run's artifact URI, resolved as
    `mlflow.utils.promptlab_utils._create_promptlab_run_impl` does with `--serve-artifacts`.

    Why private: the UTF-8 rewrite of Prompt Engineering artifacts (mlflow#14785) must write where
    MLflow wrote, and the server resolves `mlflow-artifacts:/` roots only with these helpers.
    """
    from mlflow.server.handlers import (
        _get_artifact_repo_mlflow_artifacts,
        _get_proxied_run_artifact_destination_path,
        _is_servable_proxied_run_artifact_root,
    )
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if _is_servable_proxied_run_artifact_root(artifact_uri):
        root = _get_proxied_run_artifact_destination_path(proxied_artifact_root=artifact_uri)
        return _get_artifact_repo_mlflow_artifacts(), root or None
    return get_artifact_repository(artifact_uri), None


def add_route_before_flask(fastapi_app, path: str, endpoint, methods: list[str]) -> None:
    """Serve `path` natively, ahead of the Flask app.

    Assumption about MLflow's FastAPI app: it mounts the Flask app last, at "/", and routes match
    in order, so a route inserted first wins over the Flask view for the same URL.
    """
    fastapi_app.router.add_route(path, endpoint, methods=methods, include_in_schema=False)
    fastapi_app.router.routes.insert(0, fastapi_app.router.routes.pop())


def on_shutdown(fastapi_app, close) -> None:
    """Await `close()` when the app's lifespan ends, after MLflow's own lifespan.

    Assumption: MLflow's FastAPI app keeps its lifespan in `router.lifespan_context` (Starlette's
    `on_shutdown` hooks are ignored when a lifespan is set).
    """
    inner_lifespan = fastapi_app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        try:
            async with inner_lifespan(app) as state:
                yield state
        finally:
            await close()

    fastapi_app.router.lifespan_context = lifespan


def trust_stack_gateway(api_base: str) -> None:
    """Let the built-in AI Gateway call exactly the stack's own gateway (`api_base`, e.g.
    http://gateway:7000/v1), keeping MLflow's guards for every other upstream.

    MLflow allows only public HTTPS upstreams, or, with MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS
    and MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES, every private address over plain HTTP for every
    user's secret. Our gateway is a private address on the compose network, over HTTP. So:
    - at write time, `api_base` equal to ours (scheme, host, port and path) passes; any other is
      checked by MLflow's `_validate_gateway_api_base` as before;
    - at connect time, an address resolved for our gateway's host name passes; any other host is
      checked by MLflow's `_assert_public_ip` as before.

    Why private: both checks are module-level functions with no extension point
    (mlflow/utils/validation.py, mlflow/gateway/ssrf.py); nothing upstream narrows them to a host.
    """
    from urllib.parse import urlparse

    import mlflow.gateway.ssrf as ssrf
    import mlflow.utils.validation as validation

    trusted = urlparse(api_base)
    trusted_host = trusted.hostname

    def same_upstream(url) -> bool:
        try:
            u = urlparse(str(url).strip())
            return (u.scheme, u.hostname, u.port, u.path.rstrip("/")) == (
                trusted.scheme,
                trusted.hostname,
                trusted.port,
                trusted.path.rstrip("/"),
            )
        except ValueError:
            return False

    check_api_base = getattr(
        validation._validate_gateway_api_base, "__wrapped__", validation._validate_gateway_api_base
    )
    check_ip = getattr(ssrf._assert_public_ip, "__wrapped__", ssrf._assert_public_ip)

    def validate_gateway_api_base(url: str) -> None:
        if not same_upstream(url):
            check_api_base(url)

    def assert_public_ip(ip_str: str, host: str) -> None:
        if host != trusted_host:
            check_ip(ip_str, host)

    validate_gateway_api_base.__wrapped__ = check_api_base  # type: ignore[attr-defined]
    assert_public_ip.__wrapped__ = check_ip  # type: ignore[attr-defined]
    validation._validate_gateway_api_base = validate_gateway_api_base
    ssrf._assert_public_ip = assert_public_ip


def gateway_secrets_table():
    """The SQLAlchemy table where MLflow keeps the built-in AI Gateway's encrypted secrets (columns
    `secret_name`, `wrapped_dek`, `kek_version`), read before the server starts.

    Why private: start.py refuses to replace the passphrase while secrets exist, and only MLflow's
    database model says where they are (`mlflow crypto rotate-kek` reads the same model).
    """
    from mlflow.store.tracking.dbmodels.models import SqlGatewaySecret

    return SqlGatewaySecret.__table__


def data_key_unwrapper(passphrase: str, version: int):
    """`unwrap(wrapped_dek) -> bool`: whether the key-encryption key MLflow derives from
    `passphrase` and `version` unwraps a secret's data key (AES-GCM: a wrong key fails its tag).

    Why private: MLflow has no public call that checks a passphrase against stored secrets.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.crypto import KEKManager, unwrap_dek

    kek = KEKManager(passphrase=passphrase, kek_version=version).get_kek()

    def unwrap(wrapped_dek: bytes) -> bool:
        try:
            unwrap_dek(wrapped_dek, kek)
        except MlflowException:
            return False
        return True

    return unwrap


def rest_tracking_store(host: str, username: str | None = None, password: str | None = None):
    """MLflow's REST tracking store for `host` with one user's Basic login (or none): the arena's
    reads and writes go through this server's own API as the user who asked, so that MLflow's
    permissions apply to them (tracking/arena/tracking_store.py).

    Why private: MLflow's public clients read the login from process-wide environment variables,
    and the server serves many users at once; only the store takes credentials per instance.
    """
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds

    creds = MlflowHostCreds(host, username=username, password=password)
    return RestStore(lambda: creds)
