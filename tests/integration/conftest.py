"""One pyfunc stack for all compose tests of a session (the browser tests reuse it too), with the
opt-in `tls` profile's HTTPS proxy in front of its UI."""

from __future__ import annotations

import pytest
from constants import SECOND_MODEL_NAME
from loopback import free_port
from stack import reference_model, running_stack


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.compose)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # Without basic auth (the team stack has it), so the proxy is told to serve without a login.
    env = {"TLS_PORT": str(free_port()), "TLS_ALLOW_NO_AUTH": "true"}
    with running_stack(tmp_path_factory, profile="pyfunc,tls", extra_env=env) as s:
        yield s


@pytest.fixture(scope="session")
def stack_reference_model(stack):
    return reference_model(stack)


@pytest.fixture(scope="session")
def stack_reference_model_b(stack):
    return reference_model(stack, SECOND_MODEL_NAME)
