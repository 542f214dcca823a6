"""Why a local engine (the pyfunc model server, the llamacpp engine) that does not answer has
stopped: a model problem that waiting cannot fix (a wrong model, unreadable files, too little
memory, a checkpoint llama.cpp cannot convert) leaves its reason in the model-state file
(promptlab_stack/model_state.py), and a prompt's 503 says it instead of "unreachable"."""

from __future__ import annotations

from pathlib import Path

from mlflow.gateway.exceptions import AIGatewayException

from promptlab_stack.model_state import STATE_PATH, failure_of


def with_stop_reason(
    error: AIGatewayException, endpoint: str | None, state_path: Path = STATE_PATH
) -> AIGatewayException:
    """`error`, or for a 503 of a stopped engine the reason it left for `endpoint`."""
    failure = failure_of(endpoint, state_path) if error.status_code == 503 else None
    if not failure:
        return error
    return AIGatewayException(
        503,
        f"{failure} (the model server has stopped; after the fix, run docker compose up -d again)",
    )
