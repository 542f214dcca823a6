"""Model server entrypoint: read the settings, save the pyfunc model, exec `mlflow models serve`.

Saving takes a second and writes no weights (they load in `load_context` from HF_HOME or a
mounted folder), so the model is saved at every start, with the container's settings recorded
whole in its MLmodel file. `server_command` and `server_environment` are what the container runs;
the benchmark and the tests run the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from promptlab_stack.settings import SettingsError

from hf_pyfunc.settings import ModelServerSettings

logger = logging.getLogger("hf_pyfunc.start")

MODEL_DIR = Path("/tmp/pyfunc-model")
PORT = 8080  # the model server's port on the compose network (the gateway's PYFUNC URL)


def save(path: Path, settings: ModelServerSettings) -> None:
    """Save the pyfunc model at `path` (replacing it), its settings as the MLmodel's model_config."""
    import mlflow.pyfunc

    from hf_pyfunc.pyfunc_model import SIGNATURE, HuggingFaceChatModel

    if path.exists():
        shutil.rmtree(path)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=HuggingFaceChatModel(),
        model_config=settings.model_dump(),
        signature=SIGNATURE,
    )


def server_command(model_path: Path, *, host: str = "0.0.0.0", port: int = PORT) -> list[str]:
    # One worker: one copy of the weights in memory. Concurrency is handled inside the model.
    return ["mlflow", "models", "serve", "-m", str(model_path), "--env-manager", "local",
            "--host", host, "--port", str(port), "--workers", "1"]


def server_environment(settings: ModelServerSettings) -> dict[str, str]:
    """What `mlflow models serve` itself reads: its request timeout, from the generation timeout."""
    return {"MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": f"{settings.request_timeout_s:g}"}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = ModelServerSettings.from_env()
    except SettingsError as e:
        print(f"model server settings error: {e}", file=sys.stderr)
        return 2
    missing = settings.missing_folders()
    if missing:
        print(f"model server settings error: no such folder for {', '.join(missing)} (a /models/... "
              "path is a folder under LOCAL_MODELS_DIR on the host)", file=sys.stderr)
        return 2
    save(MODEL_DIR, settings)
    logger.info("Saved pyfunc model for %s at %s; starting the scoring server",
                ", ".join(f"{m.endpoint}={m.model_id}" for m in settings.served_models), MODEL_DIR)
    os.environ.update(server_environment(settings))
    command = server_command(MODEL_DIR)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
