"""The model server's settings: read once at start (start.py), recorded whole in the saved
model's MLmodel file (`model_config`), and read back from there by `load_context`.

The generator reads no environment variable of its own, so the MLmodel file says everything the
server was started with.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from promptlab_stack.settings import GenerationTimeout, ModelChoice
from promptlab_stack.timings import model_server_timeout


class ModelServerSettings(ModelChoice, GenerationTimeout):
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    default_max_new_tokens: int = Field(256, ge=1, description="a whole number of tokens, at least 1")
    # Concurrent prompts share one batched generate (batcher.py says how a batch is gathered).
    batch_window_ms: float = Field(30.0, ge=0, description="milliseconds, 0 or more")
    max_batch_size: int = Field(16, ge=1, description="a whole number, at least 1 (1: no batching)")
    max_batch_tokens: int = Field(
        8192, ge=1, description="a whole number of padded positions, rows x (prompt + answer)"
    )
    torch_threads: int = Field(0, ge=0, description="a whole number of CPU threads, 0 for torch's default")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("unknown device")
        return device

    @property
    def request_timeout_s(self) -> float:
        """When a request's generation is stopped (the scoring server answers 504 then)."""
        return model_server_timeout(self.generation_timeout_seconds)
