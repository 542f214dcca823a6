"""The stack's topology: each service's name and port on the compose network, and the paths the
containers share. One place, read by every module that needs them; docker-compose.yml uses the
same names and ports (tests/unit/stack/test_compose_config.py holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Service:
    """A service on the compose network: its name is its host name there."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.name}:{self.port}"


TRACKING = Service("tracking", 5000)
GATEWAY = Service("gateway", 7000)
TLS = Service("tls", 8443)

# The engines the gateway routes to (MODEL_BACKEND); the pyfunc model server is ours, llamacpp is
# llama.cpp's server behind our start program.
PYFUNC = Service("pyfunc", 8080)
LLAMACPP = Service("llamacpp", 8080)
TGI = Service("tgi", 80)
VLLM = Service("vllm", 8000)
SGLANG = Service("sglang", 30000)
ENGINES = (PYFUNC, LLAMACPP, TGI, VLLM, SGLANG)

# The tracking server's stores on its volumes (mlflow-db, mlflow-artifacts).
TRACKING_DB_DIR = Path("/mlflow/db")
TRACKING_ARTIFACTS_DIR = Path("/mlflow/artifacts")

# What the model server's models are doing (the model-state volume; promptlab_stack.model_state).
MODEL_STATE_PATH = Path("/state/model-server.json")

# Every engine's Hugging Face cache (the hf-cache volume) and the host's local model folders
# (LOCAL_MODELS_DIR, read-only). LEGACY_LOCAL_MODELS_DIR is the host's ./models folder, the old
# default, still read when a /models/<folder> is not found in LOCAL_MODELS_DIR.
HF_HOME = Path("/data")
LOCAL_MODELS_DIR = Path("/models")
LEGACY_LOCAL_MODELS_DIR = Path("/models-legacy")
