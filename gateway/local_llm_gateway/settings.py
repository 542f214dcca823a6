"""The gateway's settings, read once at start (start.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from promptlab_stack.settings import Duration, GenerationTimeout, ModelChoice, comma_list

Backend = Literal["auto", "pyfunc", "tgi", "vllm"]


class GatewaySettings(ModelChoice, GenerationTimeout):
    # auto: the engine whose compose service runs (render_config.pick_backend).
    model_backend: Annotated[Backend, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)] = Field(
        "auto", description="auto, pyfunc, tgi or vllm"
    )
    # Adds an "openai-<model>" chat endpoint per model when set; never written to the config file.
    openai_api_key: str = ""
    openai_chat_models: str = Field("gpt-4o-mini", description="comma-separated OpenAI model names")
    stop_grace_period: Duration = Field(60.0, ge=0, description="a duration such as 60s, 2m or 1m30s")

    @property
    def openai_models(self) -> list[str]:
        return comma_list(self.openai_chat_models)
