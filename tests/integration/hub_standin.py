"""A stand-in for the Hugging Face Hub: no Hub is reachable here.

It serves the part of the Hub's HTTP API that huggingface_hub uses to download a model
(`/api/models/<repo>[/revision/<rev>]` and `/<repo>/resolve/<rev>/<file>`, with Range requests for
resuming) from local model folders, slowly enough that a download can be watched, and it answers
the Hub's errors the way the Hub does (headers huggingface_hub reads: X-Error-Code,
X-Error-Message): a repo that does not exist, a gated repo, a rejected token. It can also drop
the connection in the middle of a file a number of times, like a flaky network. The model server
talks to it through HF_ENDPOINT, with its real huggingface_hub client and our real code.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    folder: Path
    gated: bool = False


@dataclass
class HubStandin:
    repos: dict[str, Repo] = field(default_factory=dict)
    bytes_per_s: float = 1e12  # throttle for file bodies
    drops: dict[str, int] = field(default_factory=dict)  # file name -> connections to drop mid-body
    valid_tokens: set[str] = field(default_factory=lambda: {"hf_good"})
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, range)

    def serve(self, host: str = "0.0.0.0", port: int = 0) -> ThreadingHTTPServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, body=False)

            def do_GET(self):
                hub._handle(self, body=True)

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    # -- requests ---------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = req.path.split("?")[0]
        self.log.append((req.command, path, req.headers.get("Range", "")))
        token = (req.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if token and token not in self.valid_tokens:
            return self._error(req, 401, None, "Invalid credentials in Authorization header")
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+/?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        match = api or tree or resolve
        repo_id = match.group(1) if match else None
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(
                req, 401 if not token else 404, "RepoNotFound", "Repository not found"
            )
        if api:
            return self._json(req, self._info(repo_id, repo), body)
        if tree:
            return self._json(
                req,
                [
                    {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": _etag(p)}
                    for p in sorted(repo.folder.iterdir())
                    if p.is_file()
                ],
                body,
            )
        if repo.gated and not token:
            return self._error(
                req,
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have "
                "access to it and be authenticated to access it.",
            )
        file = repo.folder / resolve.group(2)
        if not file.is_file():
            return self._error(req, 404, "EntryNotFound", "Entry not found")
        self._file(req, file, body)

    def _info(self, repo_id: str, repo: Repo) -> dict:
        files = sorted(p for p in repo.folder.iterdir() if p.is_file())
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": COMMIT,
            "private": False,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [
                {"rfilename": p.name, "size": p.stat().st_size, "blobId": _etag(p)} for p in files
            ],
        }

    def _json(self, req, data, body: bool) -> None:
        raw = json.dumps(data).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(raw)))
        req.end_headers()
        if body:
            req.wfile.write(raw)

    def _error(self, req, status: int, code: str | None, message: str) -> None:
        raw = json.dumps({"error": message}).encode()
        req.send_response(status)
        if code:
            req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", message)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(raw)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(raw)

    def _file(self, req, file: Path, body: bool) -> None:
        data = file.read_bytes()
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", "")):
            start = int(m.group(1))
        chunk = data[start:]
        req.send_response(206 if start else 200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(chunk)))
        req.send_header("ETag", f'"{_etag(file)}"')
        req.send_header("X-Repo-Commit", COMMIT)
        req.send_header("Accept-Ranges", "bytes")
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        drop = body and self.drops.get(file.name, 0) > 0 and len(chunk) > 1
        if drop:
            self.drops[file.name] -= 1
            req.send_header("Connection", "close")
        req.end_headers()
        if not body:
            return
        sent, step = 0, 16 * 1024
        limit = len(chunk) // 4 if drop else len(chunk)  # a flaky network: a quarter, then nothing
        while sent < limit:
            piece = chunk[sent : min(sent + step, limit)]
            req.wfile.write(piece)
            req.wfile.flush()
            sent += len(piece)
            time.sleep(len(piece) / self.bytes_per_s)
        if drop:
            req.close_connection = True
            req.connection.shutdown(2)


def _etag(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
