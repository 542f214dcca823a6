"""Download a model's files from the Hub into the HF cache, reporting progress as it goes.

huggingface_hub's `snapshot_download` does the work: it fetches only the files the plan names
(preflight.py), skips files already complete and resumes a partial one from where it stopped, so
calling it again after a dropped connection continues the download. Progress is measured from
the cache itself (the repo's blobs, partial ones included) every PROGRESS_EVERY_S, which works
the same for every file and transport; the model pool turns it into the model's state and log.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROGRESS_EVERY_S = 1.0
GB, MB = 1e9, 1e6


@dataclass
class Progress:
    done: int
    total: int
    rate: float  # bytes/s over the last seconds

    def describe(self) -> str:
        unit, scale = ("GB", GB) if self.total >= GB / 10 else ("MB", MB)
        text = f"{self.done / scale:.2f} of {self.total / scale:.2f} {unit}"
        if self.rate > 0:
            left = max(self.total - self.done, 0) / self.rate
            text += f" ({self.rate / MB:.1f} MB/s, about {_duration(left)} left)"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def repo_cache_bytes(repo_id: str) -> int:
    """Bytes of the repo's files in the HF cache, partial downloads included."""
    from huggingface_hub.constants import HF_HUB_CACHE

    blobs = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "blobs"
    try:
        return sum(f.stat().st_size for f in blobs.iterdir() if f.is_file())
    except OSError:
        return 0


def download(
    repo_id: str,
    files: list[str],
    total: int,
    token: str | None,
    on_progress: Callable[[Progress], None],
) -> Path:
    """The snapshot folder, once every file is there; raises what the download raised."""
    from huggingface_hub import snapshot_download

    stop = threading.Event()
    start_bytes = repo_cache_bytes(repo_id)
    total = max(total, start_bytes)

    def watch() -> None:
        samples = [(time.monotonic(), start_bytes)]
        while not stop.wait(PROGRESS_EVERY_S):
            now, done = time.monotonic(), repo_cache_bytes(repo_id)
            samples = [s for s in samples if now - s[0] <= 10] + [(now, done)]
            rate = (done - samples[0][1]) / (now - samples[0][0]) if now > samples[0][0] else 0.0
            on_progress(Progress(min(done, total), total, max(rate, 0.0)))

    watcher = threading.Thread(target=watch, name=f"progress {repo_id}", daemon=True)
    watcher.start()
    try:
        path = snapshot_download(repo_id, allow_patterns=files, token=token or None)
    finally:
        stop.set()
        watcher.join()
    on_progress(Progress(total, total, 0.0))
    return Path(path)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: the network or the Hub's servers, not the request itself or this disk."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        return status is None or status >= 500 or status == 429
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS):
        return False
    return True


def describe_permanent(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (
            "no space left on the disk that holds the hf-cache volume. Fix: free disk space "
            "(docker system df; docker volume ls), then docker compose up -d"
        )
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EROFS):
        return (
            f"cannot write the model cache ({error}). Fix: the hf-cache volume must be writable "
            "by uid 1000 (docker volume rm <project>_hf-cache recreates it)"
        )
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
