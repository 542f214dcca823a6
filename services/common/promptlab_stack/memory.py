"""The memory a container may use, as the model engines size themselves by it."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory_bytes() -> int:
    """The container's memory limit (cgroup v2 or v1), else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 60:  # "max" or a huge number: no limit
            return int(value)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
