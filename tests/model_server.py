"""The model server's app as the container serves it (pyfunc_server.scoring_app.create_app), for
tests that run it with uvicorn in process."""

from __future__ import annotations

import os
from pathlib import Path


def model_server_app(saved_model: Path):
    """The app for the pyfunc model saved at `saved_model` (pyfunc_server.start.save)."""
    from pyfunc_server.scoring_app import MODEL_PATH_ENV, create_app

    os.environ[MODEL_PATH_ENV] = str(saved_model)
    try:
        return create_app()
    finally:
        del os.environ[MODEL_PATH_ENV]
