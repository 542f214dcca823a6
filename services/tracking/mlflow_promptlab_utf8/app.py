"""``mlflow server --app-name promptlab-utf8``: MLflow's server with readable promptlab artifacts
and a gateway proxy that reports the gateway's errors as they are (see gateway_proxy.py) and,
under uvicorn, runs on the event loop with pooled connections (gateway_proxy_asgi.py).

MLflow 3.17.2 writes the artifacts of a Prompt Engineering UI run with ``\\uXXXX`` escapes
(mlflow#14785). Rather than patching site-packages, this wraps the create-promptlab-run view:
after MLflow has created the run, the affected artifacts are downloaded, re-encoded as UTF-8
and uploaded to the same paths.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import tempfile
from collections import defaultdict

from mlflow_promptlab_utf8.gateway_proxy import wrap_gateway_proxy
from mlflow_promptlab_utf8.gateway_proxy_asgi import install_async_gateway_proxy
from mlflow_promptlab_utf8.reencode import ARTIFACT_REENCODERS

_logger = logging.getLogger(__name__)

# Matched as a suffix so that a static prefix (--static-prefix) and the /api vs /ajax-api
# variants are all covered.
ROUTE_SUFFIX = "/mlflow/runs/create-promptlab-run"
# Set on our wrapper so that calling create_app() twice does not wrap the view twice.
_WRAPPED_MARKER = "_mlflow_promptlab_utf8_wrapped"


def create_app(app=None):
    """App factory for the ``mlflow.app`` entry point ``promptlab-utf8``.

    Wraps the create-promptlab-run view(s) of MLflow's Flask ``app`` (``mlflow.server.app`` by
    default), replaces its gateway-proxy view and, like ``mlflow.server.auth.create_app``,
    returns the FastAPI wrapper when ``mlflow server`` runs under uvicorn (its default), with the
    gateway proxy served natively there, and the Flask app otherwise.
    """
    if app is None:
        from mlflow.server import app

    wrap_promptlab_views(app)
    wrap_gateway_proxy(app)
    from mlflow.environment_variables import _MLFLOW_SGI_NAME

    under_uvicorn = _MLFLOW_SGI_NAME.get() == "uvicorn"
    authenticate = None
    if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        # `--app-name` takes one app, so basic auth is chained here: MLflow's own auth factory
        # adds its login checks to the same Flask app and returns the app uvicorn serves.
        from mlflow.server.auth import _authenticate_custom_for_fastapi
        from mlflow.server.auth import create_app as create_basic_auth_app

        served = create_basic_auth_app(app)
        # Runs the configured authorization function in a Flask request context, as Flask does
        # for its own views. (MLflow's native-route check decodes passwords as ASCII only.)
        authenticate = _authenticate_custom_for_fastapi
    elif under_uvicorn:
        from mlflow.server.fastapi_app import create_fastapi_app

        served = create_fastapi_app(app)
    else:
        served = app
    if under_uvicorn:
        install_async_gateway_proxy(served, app, authenticate)
    return served


def wrap_promptlab_views(app) -> list[str]:
    """Wrap every view routed at ``.../mlflow/runs/create-promptlab-run``; return the endpoints."""
    endpoints = sorted(
        {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.endswith(ROUTE_SUFFIX)}
    )
    if not endpoints:
        # Not fatal: the server is still useful without the fix, and the tests catch this.
        _logger.warning(
            "promptlab-utf8: no route ending with %s found; artifacts stay escaped", ROUTE_SUFFIX
        )
    for endpoint in endpoints:
        view = app.view_functions[endpoint]
        if not getattr(view, _WRAPPED_MARKER, False):
            app.view_functions[endpoint] = _wrap_view(view)
    return endpoints


def _wrap_view(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        rv = view(*args, **kwargs)
        from flask import current_app

        # make_response returns a Response as-is; it only normalises other return types so we
        # can look at the status. The original return value is what goes back to the client.
        response = current_app.make_response(rv)
        if response.status_code == 200:
            _rewrite_from_response(response)
        return rv

    setattr(wrapper, _WRAPPED_MARKER, True)
    return wrapper


def _rewrite_from_response(response) -> None:
    # Never fail the request here: the run and its (escaped) artifacts already exist, so the
    # worst case is the upstream behaviour.
    run_id = None
    try:
        info = ((response.get_json(silent=True) or {}).get("run") or {}).get("info") or {}
        run_id = info.get("run_id") or info.get("run_uuid")
        artifact_uri = info.get("artifact_uri")
        if not artifact_uri:
            _logger.warning("promptlab-utf8: no artifact_uri in response for run %s", run_id)
            return
        rewrite_run_artifacts(artifact_uri)
    except Exception:
        _logger.warning(
            "promptlab-utf8: could not rewrite artifacts of run %s as UTF-8; they keep MLflow's "
            "\\u escapes",
            run_id,
            exc_info=True,
        )


def resolve_artifact_repo(artifact_uri: str):
    """Return ``(repository, root path inside it or None)`` for a run's artifact URI.

    Mirrors ``mlflow.utils.promptlab_utils._create_promptlab_run_impl``: with
    ``--serve-artifacts`` an ``mlflow-artifacts:/`` root is resolved to the server's artifacts
    destination. The private helpers are imported here, not at module level, so that an MLflow
    upgrade that renames them fails loudly in the tests (and only degrades at runtime).
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


def _join(*parts: str | None) -> str | None:
    parts = [p for p in parts if p]
    return posixpath.join(*parts) if parts else None


def rewrite_run_artifacts(artifact_uri: str) -> list[str]:
    """Rewrite the run's escaped artifacts as readable UTF-8; return the paths rewritten.

    Absent files and files that are already readable are skipped. A file that fails is logged
    and skipped; the others are still processed.
    """
    repo, root = resolve_artifact_repo(artifact_uri)
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel_path in ARTIFACT_REENCODERS:
        by_dir[posixpath.dirname(rel_path)].append(posixpath.basename(rel_path))

    rewritten = []
    with tempfile.TemporaryDirectory(prefix="promptlab-utf8-") as tmp:
        for rel_dir, names in by_dir.items():
            repo_dir = _join(root, rel_dir)
            # List first so that a missing file (e.g. no serving example in some MLflow
            # version) is a skip, not a download error.
            present = {
                posixpath.basename(f.path) for f in repo.list_artifacts(repo_dir) if not f.is_dir
            }
            for name in names:
                if name not in present:
                    continue
                rel_path = _join(rel_dir, name)
                try:
                    if _rewrite_one(repo, repo_dir, name, ARTIFACT_REENCODERS[rel_path], tmp):
                        rewritten.append(rel_path)
                except Exception:
                    _logger.warning(
                        "promptlab-utf8: could not rewrite %s under %s", rel_path, artifact_uri,
                        exc_info=True,
                    )
    return rewritten


def _rewrite_one(repo, repo_dir: str | None, name: str, reencode, tmp: str) -> bool:
    local = repo.download_artifacts(_join(repo_dir, name), dst_path=tempfile.mkdtemp(dir=tmp))
    with open(local, "rb") as f:
        text = f.read().decode("utf-8")
    new_text = reencode(text)
    if new_text == text:
        return False
    # Same basename in a fresh directory: log_artifact uploads under the file's own name.
    upload = os.path.join(tempfile.mkdtemp(dir=tmp), name)
    with open(upload, "wb") as f:
        f.write(new_text.encode("utf-8"))
    repo.log_artifact(upload, artifact_path=repo_dir)
    return True
