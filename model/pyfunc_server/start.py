"""Model server entrypoint: read the settings, check the models (preflight.py), save the pyfunc
model, exec MLflow's scoring server on it (what `mlflow models serve` runs; scoring_app.py).

Saving takes a second and writes no weights (they arrive in the background once the server
answers: model_pool.py), so the model is saved at every start, with the container's settings
recorded whole in its MLmodel file and preflight's plan beside them. `server_command` and
`server_environment` are what the container runs; the benchmark and the tests run the same.

A bad setting or a model problem that waiting cannot fix stops the container the stack's way
(promptlab_stack/stop.py): status 0 and a last log line naming the cause and the fix, so that
compose's `restart: on-failure` restarts the server after a crash, but not into the same error
again. A model problem also goes to the state file, so the gateway's 503 says it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from promptlab_stack.model_state import FAILED, QUEUED, write_state
from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.topology import MODEL_STATE_PATH, PYFUNC
from pyfunc_server.mlflow_compat import REQUEST_TIMEOUT_ENV
from pyfunc_server.preflight import STARTUP_ARTIFACT, ModelProblem, check, write_startup
from pyfunc_server.scoring_app import MODEL_PATH_ENV
from pyfunc_server.settings import ModelServerSettings

logger = logging.getLogger("pyfunc_server.start")

MODEL_DIR = Path("/tmp/pyfunc-model")
STARTUP_FILE = Path("/tmp/pyfunc-startup.json")


def save(path: Path, settings: ModelServerSettings, startup: Path | None = None) -> None:
    """Save the pyfunc model at `path` (replacing it), its settings as the MLmodel's model_config
    and, when given, preflight's startup file as an artifact (then the models load in the
    background; without it, `load_context` loads them before the server answers)."""
    # mlflow (and the model's code with it) takes seconds to import: only once the settings and
    # the models passed preflight, so that a bad setting stops the server at once.
    import mlflow.pyfunc

    from pyfunc_server.pyfunc_model import SIGNATURE, HuggingFaceChatModel

    if path.exists():
        shutil.rmtree(path)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=HuggingFaceChatModel(),
        model_config=settings.model_dump(),
        signature=SIGNATURE,
        artifacts={STARTUP_ARTIFACT: str(startup)} if startup else None,
    )


def server_command(
    model_path: Path, *, host: str = "0.0.0.0", port: int = PYFUNC.port
) -> list[str]:
    """What `mlflow models serve -m MODEL --env-manager local --workers 1` runs (uvicorn on MLflow's
    scoring server app), on our factory that adds the body limit (scoring_app.py says why).
    One worker: one copy of the weights in memory. Concurrency is handled inside the model."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--factory",
        "pyfunc_server.scoring_app:create_app",
    ]


def server_environment(
    settings: ModelServerSettings, model_path: Path = MODEL_DIR
) -> dict[str, str]:
    """What the scoring server reads: the saved model, and its request timeout (derived from the
    generation timeout), as `mlflow models serve` would set it."""
    return {MODEL_PATH_ENV: str(model_path), REQUEST_TIMEOUT_ENV: f"{settings.request_timeout_s:g}"}


def stop_on(problem: ModelProblem, settings: ModelServerSettings, state_path: Path) -> int:
    """Leave the reason in the state file and as the last log line; stop without a restart."""
    models = {}
    for m in settings.served_models:
        failed = m.model_id == problem.model
        models[m.endpoint] = {
            "model_id": m.model_id,
            "at_start": True,
            "state": FAILED if failed else QUEUED,
            "message": f"model {m.endpoint!r} ({m.model_id}) failed: {problem}"
            if failed
            else f"not started: another model failed ({problem})",
        }
    write_state(models, state_path, stopped=True)
    return stop_service("model server", problem)


def main(state_path: Path = MODEL_STATE_PATH) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = ModelServerSettings.from_env()
    except SettingsError as e:
        return stop_service("model server", f"settings error: {e}")
    write_state(
        {
            m.endpoint: {
                "model_id": m.model_id,
                "state": QUEUED,
                "at_start": True,
                "message": f"model {m.endpoint!r} ({m.model_id}): "
                "checking it before the server starts",
            }
            for m in settings.served_models
        },
        state_path,
    )
    try:
        plans = check(settings)
    except ModelProblem as problem:
        return stop_on(problem, settings, state_path)
    for plan in plans:
        logger.info(
            "Model %s (%s): %s, about %.2f GB once loaded",
            plan.endpoint,
            plan.model_id,
            f"{plan.download_bytes / 1e9:.2f} GB to download from the Hub"
            if plan.files
            else f"files in {plan.folder}",
            (plan.memory_bytes or 0) / 1e9,
        )
    save(MODEL_DIR, settings, write_startup(STARTUP_FILE, plans, state_path))
    logger.info(
        "Saved pyfunc model for %s at %s; starting the scoring server",
        ", ".join(f"{m.endpoint}={m.model_id}" for m in settings.served_models),
        MODEL_DIR,
    )
    os.environ.update(server_environment(settings))
    command = server_command(MODEL_DIR)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
