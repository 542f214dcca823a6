"""The endpoint-sync service's healthcheck (endpoint_sync/health.py): healthy while passes keep
coming, whatever they found."""

from __future__ import annotations

import os
import time

from endpoint_sync.health import MAX_AGE_S, beat, check


def test_healthy_while_the_passes_keep_coming_and_it_says_how_the_last_went(tmp_path):
    heartbeat = tmp_path / "heartbeat"
    assert check(heartbeat) == (False, "starting: no pass yet")
    beat("in sync: tiny-ja, tiny-b", heartbeat)
    assert check(heartbeat) == (True, "in sync: tiny-ja, tiny-b")
    beat("not synced (retrying): ConnectionError: refused", heartbeat)
    assert check(heartbeat) == (True, "not synced (retrying): ConnectionError: refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heartbeat"]


def test_a_sync_that_stopped_making_passes_is_unhealthy(tmp_path):
    heartbeat = tmp_path / "heartbeat"
    beat("in sync: tiny-ja", heartbeat)
    then = time.time() - MAX_AGE_S - 5
    os.utime(heartbeat, (then, then))
    healthy, said = check(heartbeat)
    assert (
        not healthy and said.startswith("stuck: the last pass was") and "in sync: tiny-ja" in said
    )
