"""The model server's settings: read once at start (start.py), recorded whole in the saved
model's MLmodel file (`model_config`), and read back from there by `load_context`.

The generator reads no environment variable of its own, so the MLmodel file says everything the
server was started with.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from promptlab_stack.memory import available_memory_bytes
from promptlab_stack.settings import GenerationTimeout, ModelChoice, RequestLimit
from promptlab_stack.timings import model_server_timeout


class ModelServerSettings(ModelChoice, GenerationTimeout, RequestLimit):
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    default_max_new_tokens: int = Field(
        256, ge=1, description="a whole number of tokens, at least 1"
    )
    # Concurrent prompts share one batched generate (batcher.py says how a batch is gathered).
    batch_window_ms: float = Field(30.0, ge=0, description="milliseconds, 0 or more")
    max_batch_size: int = Field(16, ge=1, description="a whole number, at least 1 (1: no batching)")
    max_batch_tokens: int = Field(
        8192, ge=1, description="a whole number of padded positions, rows x (prompt + answer)"
    )
    # Prompts that may wait for a batch, per model; past it a prompt is refused at once with a 429
    # (Retry-After), instead of waiting minutes for a timeout.
    max_queued_requests: int = Field(64, ge=1, description="a whole number, at least 1")
    # 0: chosen from the model's size and the usable CPUs at start, and logged (threads.py).
    torch_threads: int = Field(
        0,
        ge=0,
        description="a whole number of CPU threads, 0 to choose from the model and the CPUs",
    )
    # auto: linear layers prepacked for oneDNN when a measurement at start shows it is faster
    # (CPU float32 only; prepacked_weights.py).
    prepack_weights: Literal["auto", "on", "off"] = Field("auto", description="auto, on or off")
    # Models beyond it are loaded on demand and the least recently used one is unloaded
    # (model_pool.py); 0: 80% of the memory the container may use.
    model_memory_budget_gb: float = Field(
        0.0, ge=0, description="gigabytes, 0 for 80% of the memory available"
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("unknown device")
        return device

    @property
    def memory_budget_bytes(self) -> int:
        if self.model_memory_budget_gb > 0:
            return int(self.model_memory_budget_gb * 1e9)
        return int(0.8 * available_memory_bytes())

    @property
    def request_timeout_s(self) -> float:
        """When a request's generation is stopped (the scoring server answers 504 then)."""
        return model_server_timeout(self.generation_timeout_seconds)
