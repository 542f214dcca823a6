"""One pyfunc stack for all compose tests of a session (the browser tests reuse it too)."""

from __future__ import annotations

import pytest
from make_tiny_model import build_tiny_model
from stack import SERVED_MODEL_NAME, Stack, docker_available


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.compose)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not docker_available():
        pytest.fail("the compose tests need a running Docker engine (see .ci/run)")
    models = tmp_path_factory.mktemp("stack-models")
    build_tiny_model(models / SERVED_MODEL_NAME)
    s = Stack(models)
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def stack_reference_model(stack):
    """The stack's own model folder loaded with plain transformers, for greedy comparisons."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = stack.models_dir / SERVED_MODEL_NAME
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
