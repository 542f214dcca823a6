"""Container entrypoint: save the pyfunc model for MODEL_ID, then exec `mlflow models serve`.

Saving takes a second and writes no weights (they load in `load_context` from HF_HOME or a
mounted folder), so the model is saved at start from the container's environment and every
setting is recorded in its MLmodel file.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

logger = logging.getLogger("hf_pyfunc.serve")


def model_config_from_env(env: dict[str, str]) -> dict[str, str | int]:
    model_id = env.get("MODEL_ID", "").strip()
    if not model_id:
        raise SystemExit("MODEL_ID is empty: set it to a Hugging Face repo id or a /models/... path")
    max_new = env.get("DEFAULT_MAX_NEW_TOKENS", "256").strip()
    if not max_new.isdigit() or int(max_new) < 1:
        raise SystemExit(f"DEFAULT_MAX_NEW_TOKENS must be a positive integer, got {max_new!r}")
    device = env.get("DEVICE", "auto").strip() or "auto"
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise SystemExit(f"DEVICE must be auto, cpu or cuda[:N], got {device!r}")
    return {
        "model_id": model_id,
        "served_model_name": env.get("SERVED_MODEL_NAME", "").strip()
        or model_id.rstrip("/").split("/")[-1],
        "device": device,
        "default_max_new_tokens": int(max_new),
    }


def save(path: Path, config: dict) -> None:
    import mlflow.pyfunc

    from hf_pyfunc.pyfunc_model import SIGNATURE, HuggingFaceChatModel

    if path.exists():
        shutil.rmtree(path)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=HuggingFaceChatModel(),
        model_config=config,
        signature=SIGNATURE,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = model_config_from_env(dict(os.environ))
    path = Path(os.environ.get("PYFUNC_MODEL_DIR", "/tmp/pyfunc-model"))
    save(path, config)
    logger.info("Saved pyfunc model for %s at %s; starting the scoring server", config["model_id"], path)
    port = os.environ.get("PYFUNC_PORT", "8080")
    # One worker: one copy of the weights in memory. Concurrency is handled inside the model.
    os.execvp(
        "mlflow",
        ["mlflow", "models", "serve", "-m", str(path), "--env-manager", "local",
         "--host", "0.0.0.0", "--port", port, "--workers", "1"],
    )


if __name__ == "__main__":
    sys.exit(main())
