"""Every image's whole Python environment is pinned: its requirements.lock (pip constraints, made
by scripts/lock-image-requirements.sh from the built image) pins each package exactly, agrees
with the direct pins of requirements.txt, and the Dockerfile installs with it."""

from __future__ import annotations

import re

import pytest
from constants import REPO

IMAGES = {
    "tracking": "services/tracking",
    "gateway": "gateway",
    "pyfunc": "model",
    "llamacpp": "services/llamacpp",
    "tls": "services/tls",
}
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\],]+)==([^\s;#]+)$")


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.relative_to(REPO)}: not an exact pin: {line!r}"
        name = re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")
        found[name] = match.group(2)
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_the_lock_pins_everything_and_agrees_with_the_direct_requirements(image):
    folder = REPO / IMAGES[image]
    lock, direct = pins(folder / "requirements.lock"), pins(folder / "requirements.txt")
    assert len(lock) > len(direct) > 0
    for name, version in direct.items():
        assert lock.get(name) == version, (
            f"{image}: {name}=={version} in requirements.txt, {lock.get(name)} in the lock"
        )
    assert not any("+" in v for v in lock.values()), (
        "local version labels (+cpu) would refuse other builds"
    )
    dockerfile = (folder / "Dockerfile").read_text()
    assert "-c /tmp/requirements.lock" in dockerfile and "requirements.lock /tmp/" in dockerfile
