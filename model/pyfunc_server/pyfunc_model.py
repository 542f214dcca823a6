"""The MLflow pyfunc model: `load_context` loads the HF models, `predict` answers gateway
requests."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ParamSchema, ParamSpec

from pyfunc_server.generator import HFGenerator
from pyfunc_server.model_pool import ModelPool
from pyfunc_server.preflight import STARTUP_ARTIFACT, read_startup
from pyfunc_server.python_compat import widen_thread_pool
from pyfunc_server.requests import CHAT, parse_model_input
from pyfunc_server.sampling import Completion
from pyfunc_server.settings import ModelServerSettings

# Declared so that the scoring server passes these through to `predict` (it drops undeclared
# params). Defaults are None/empty: unset values fall back to the model's generation_config.
SIGNATURE = ModelSignature(
    inputs=None,
    params=ParamSchema(
        [
            ParamSpec("temperature", "double", None),
            ParamSpec("max_tokens", "long", None),
            ParamSpec("top_p", "double", None),
            ParamSpec("stop", "string", [], shape=(-1,)),
        ]
    ),
)


def log_to_stderr() -> None:
    """Our INFO lines (download progress, loads, batching) in the container's log: the scoring
    server configures uvicorn's loggers only, and Python drops INFO records without a handler."""
    logger = logging.getLogger("pyfunc_server")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


# Threads beyond the admitted requests, for the requests being refused (each takes milliseconds)
# and the calls that wait for no batch.
SPARE_THREADS = 32


def scoring_threads(settings: ModelServerSettings) -> int:
    """Threads for the scoring server: every served model's batch and queue, and spares."""
    per_model = settings.max_batch_size + settings.max_queued_requests
    return len(settings.served_models) * per_model + SPARE_THREADS


class HuggingFaceChatModel(PythonModel):
    """Chat and completions on any `AutoModelForCausalLM`s, with real token usage in the answer.
    A unified request's "model" names which of the served models answers (default: the first)."""

    def load_context(self, context):
        log_to_stderr()
        # Every setting the server was started with, as start.py recorded it in the MLmodel file.
        self.settings = ModelServerSettings.model_validate(context.model_config or {})
        # What start.py's preflight found (where each model's files are), when it ran.
        startup = (
            read_startup(context.artifacts.get(STARTUP_ARTIFACT)) if context.artifacts else None
        )
        self.pool = ModelPool(
            self.settings,
            HFGenerator,
            plans=startup.plans if startup else None,
            state_path=startup.state_path if startup else None,
        )
        if startup:
            # The server answers at once; the models arrive in the background (model_pool.py).
            self.pool.start()
        else:
            self.pool.preload()

    # No type hints on model_input: MLflow would derive an input schema from them, and this
    # model takes both a list of strings and the unified chat/completions dict.
    def predict(self, context, model_input, params=None):
        # Each request waits for its batch in a thread of the scoring server's pool: enough threads
        # for every model's full batch and queue to wait at once, so that the request past them
        # reaches its batcher and gets the fast 429 instead of waiting for a thread unseen.
        widen_thread_pool(scoring_threads(self.settings))
        parsed = parse_model_input(model_input, params)
        deadline = time.monotonic() + self.settings.request_timeout_s
        with self.pool.use(parsed.model, deadline) as generator:
            completions = generator.generate(parsed.requests, deadline)
        if not parsed.unified:
            return [c.text for c in completions]
        model = parsed.model or self.pool.default
        if parsed.requests[0].kind == CHAT:
            return self._chat_response(model, completions[0])
        return self._completions_response(model, completions)

    def _envelope(self, kind: str, model: str, completions: list[Completion]) -> dict[str, Any]:
        prompt = sum(c.prompt_tokens for c in completions)
        generated = sum(c.completion_tokens for c in completions)
        return {
            "id": f"{kind}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": generated,
                "total_tokens": prompt + generated,
            },
        }

    def _chat_response(self, model: str, c: Completion) -> dict[str, Any]:
        response = self._envelope("chat.completion", model, [c])
        response["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
            }
        ]
        return response

    def _completions_response(self, model: str, completions: list[Completion]) -> dict[str, Any]:
        response = self._envelope("text_completion", model, completions)
        response["choices"] = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ]
        return response
