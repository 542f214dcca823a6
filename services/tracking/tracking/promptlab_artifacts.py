"""Readable UTF-8 artifacts for Prompt Engineering UI runs (upstream issue mlflow#14785).

MLflow 3.17.2 writes the artifacts of a Prompt Engineering UI run with ``\\uXXXX`` escapes.
Rather than patching site-packages, this wraps the create-promptlab-run view: after MLflow has
created the run, the affected artifacts are downloaded, re-encoded as UTF-8 (reencode.py) and
uploaded to the same paths.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from tracking.mlflow_compat import proxied_artifact_repo
from tracking.reencode import ARTIFACT_REENCODERS

_logger = logging.getLogger(__name__)

# Matched as a suffix so that a static prefix (--static-prefix) and the /api vs /ajax-api
# variants are all covered.
ROUTE_SUFFIX = "/mlflow/runs/create-promptlab-run"
# Set on our wrapper so that calling create_app() twice does not wrap the view twice.
_WRAPPED_MARKER = "_mlflow_promptlab_utf8_wrapped"


def wrap_promptlab_views(app) -> list[str]:
    """Wrap every view routed at ``.../mlflow/runs/create-promptlab-run``; return the endpoints."""
    endpoints = sorted(
        {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.endswith(ROUTE_SUFFIX)}
    )
    if not endpoints:
        # Not fatal: the server is still useful without the fix, and the tests catch this.
        _logger.warning(
            "promptlab: no route ending with %s found; artifacts stay escaped", ROUTE_SUFFIX
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
            _logger.warning("promptlab: no artifact_uri in response for run %s", run_id)
            return
        rewrite_run_artifacts(artifact_uri)
    except Exception:
        _logger.warning(
            "promptlab: could not rewrite artifacts of run %s as UTF-8; they keep MLflow's "
            "\\u escapes",
            run_id,
            exc_info=True,
        )


def _join(*parts: str | None) -> str | None:
    present = [p for p in parts if p]
    return posixpath.join(*present) if present else None


def rewrite_run_artifacts(artifact_uri: str) -> list[str]:
    """Rewrite the run's escaped artifacts as readable UTF-8; return the paths rewritten.

    Absent files and files that are already readable are skipped. A file that fails is logged
    and skipped; the others are still processed.
    """
    repo, root = proxied_artifact_repo(artifact_uri)
    by_dir: dict[str, list[str]] = defaultdict(list)
    for rel_path in ARTIFACT_REENCODERS:
        by_dir[posixpath.dirname(rel_path)].append(posixpath.basename(rel_path))

    rewritten = []
    with tempfile.TemporaryDirectory(prefix="promptlab-") as tmp:
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
                rel_path = posixpath.join(rel_dir, name)
                try:
                    if _rewrite_one(repo, repo_dir, name, ARTIFACT_REENCODERS[rel_path], tmp):
                        rewritten.append(rel_path)
                except Exception:
                    _logger.warning(
                        "promptlab: could not rewrite %s under %s",
                        rel_path,
                        artifact_uri,
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
    data = new_text.encode("utf-8")
    if isinstance(repo, LocalArtifactRepository):
        _replace_whole(Path(repo.artifact_dir, *(repo_dir or "").split("/"), name), data)
        return True
    # An object store (S3 and compatibles) replaces an object whole: a reader gets the old or the
    # new file. Same basename in a fresh directory: log_artifact uploads under the file's own name.
    upload = os.path.join(tempfile.mkdtemp(dir=tmp), name)
    with open(upload, "wb") as f:
        f.write(data)
    repo.log_artifact(upload, artifact_path=repo_dir)
    return True


def _replace_whole(path: Path, data: bytes) -> None:
    """Write beside the file, then rename over it: the UI, reading while this runs, sees the old
    file or the new one, never a half-written one (LocalArtifactRepository.log_artifact copies
    into the existing file)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
