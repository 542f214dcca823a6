"""Shared fixtures: the tiny test model (built here, since no model hub is reachable)."""

from __future__ import annotations

from pathlib import Path

import pytest
from constants import SECOND_MODEL_NAME, SECOND_MODEL_SHAPE, SERVED_MODEL_NAME
from make_tiny_model import build_tiny_model  # scripts/ is on pythonpath (pyproject.toml)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / SERVED_MODEL_NAME)


@pytest.fixture(scope="session")
def tiny_model_b_dir(tmp_path_factory) -> Path:
    """A second tiny model with another tokenizer (vocabulary, special tokens) and chat template."""
    return build_tiny_model(
        tmp_path_factory.mktemp("models") / SECOND_MODEL_NAME, **SECOND_MODEL_SHAPE
    )


@pytest.fixture(scope="session")
def reference_model_b(tiny_model_b_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_b_dir), AutoModelForCausalLM.from_pretrained(
        tiny_model_b_dir
    ).eval()


@pytest.fixture(scope="session")
def reference_model(tiny_model_dir):
    """The tiny model loaded with plain transformers: the ground truth for greedy answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return tokenizer, model


@pytest.fixture(scope="session")
def pyfunc_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model saved as our pyfunc model, as the model image's start.py saves it."""
    from pyfunc_server.settings import ModelServerSettings
    from pyfunc_server.start import save

    path = tmp_path_factory.mktemp("pyfunc") / "model"
    save(
        path, ModelServerSettings(model_id=str(tiny_model_dir), served_model_name=SERVED_MODEL_NAME)
    )
    return path


@pytest.fixture(scope="session")
def model_server(pyfunc_dir):
    """The model server's app as the container serves it (scoring_app.create_app), with uvicorn on
    a loopback port in this process: its URL."""
    from loopback import serving  # scripts/
    from model_server import model_server_app

    with serving(model_server_app(pyfunc_dir)) as url:
        yield url
