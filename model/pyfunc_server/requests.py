"""Turn whatever reaches `predict` into validated generation requests.

Two shapes arrive at `mlflow models serve`'s /invocations:
- MLflow's built-in `mlflow-model-serving` gateway provider sends `{"inputs": [text, ...],
  "params": {...}}`; the scoring server hands `predict` a list/array of strings. Each string is one
  user turn (chat) and the caller expects a list of strings back.
- Our `pyfunc` gateway provider sends MLflow's "unified LLM" shape, `{"messages": [...], ...}`
  or `{"prompt": ..., ...}`; `predict` gets the dict and answers with an OpenAI-style payload that
  carries token usage, which the built-in provider cannot return.
Bad input raises MlflowException(INVALID_PARAMETER_VALUE), which the scoring server returns as 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException

CHAT = "chat"
COMPLETIONS = "completions"
VALID_ROLES = {"system", "user", "assistant"}


def bad_request(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


# OpenAI allows 4 stop strings; a few more cost nothing, thousands would slow every step.
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings; None means "use the model's generation_config"."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> SamplingParams:
        params = params or {}
        temperature = _optional_number(params, "temperature", float)
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise bad_request(f"temperature must be between 0 and 2, got {temperature}")
        max_tokens = _optional_number(params, "max_tokens", int)
        if max_tokens is not None and max_tokens < 1:
            raise bad_request(f"max_tokens must be at least 1, got {max_tokens}")
        top_p = _optional_number(params, "top_p", float)
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise bad_request(f"top_p must be in (0, 1], got {top_p}")
        stop = params.get("stop")
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        elif isinstance(stop, (list, tuple)) or hasattr(stop, "tolist"):
            stop = tuple(stop.tolist() if hasattr(stop, "tolist") else stop)
            if not all(isinstance(s, str) for s in stop):
                raise bad_request("stop must be a string or a list of strings")
        else:
            raise bad_request("stop must be a string or a list of strings")
        # Every stop string is checked against every new token of every row: bound the work.
        if len(stop) > MAX_STOP_STRINGS:
            raise bad_request(
                f"stop has {len(stop)} strings; at most {MAX_STOP_STRINGS} are allowed"
            )
        if any(len(s) > MAX_STOP_CHARS for s in stop):
            raise bad_request(f"a stop string may be at most {MAX_STOP_CHARS} characters long")
        return cls(temperature, max_tokens, top_p, tuple(s for s in stop if s))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _optional_number(params: dict[str, Any], name: str, kind: type) -> Any:
    value = params.get(name)
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalars from the scoring server's param parsing
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"{name} must be a number, got {value!r}")
    if kind is int and float(value) != int(value):
        raise bad_request(f"{name} must be a whole number, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class GenerationRequest:
    kind: str  # CHAT or COMPLETIONS
    messages: tuple[dict[str, str], ...] = ()
    prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class ParsedInput:
    requests: list[GenerationRequest]
    # True for MLflow's unified LLM shape: answer with an OpenAI-style dict including usage.
    # False for the plain `inputs` list: answer with a list of strings, as the caller expects.
    unified: bool
    model: str | None = None  # which served model answers (None: the first)


def validate_messages(messages: Any) -> tuple[dict[str, str], ...]:
    if hasattr(messages, "tolist"):
        messages = messages.tolist()
    if not isinstance(messages, (list, tuple)) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in VALID_ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {sorted(VALID_ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise bad_request(f"messages[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return tuple(checked)


def parse_model_input(model_input: Any, params: dict[str, Any] | None) -> ParsedInput:
    sampling = SamplingParams.from_params(params)
    if isinstance(model_input, dict):
        model = model_input.get("model")
        if model is not None and not (isinstance(model, str) and model):
            raise bad_request("model must be the name of one of the server's models")
        if "messages" in model_input:
            messages = validate_messages(model_input["messages"])
            return ParsedInput(
                [GenerationRequest(CHAT, messages=messages, sampling=sampling)], True, model
            )
        if "prompt" in model_input:
            prompts = model_input["prompt"]
            prompts = [prompts] if isinstance(prompts, str) else _strings(prompts, "prompt")
            return ParsedInput(
                [GenerationRequest(COMPLETIONS, prompt=p, sampling=sampling) for p in prompts],
                True,
                model,
            )
        raise bad_request("expected 'messages' (chat) or 'prompt' (completions) in the request")
    # The built-in provider's {"inputs": [...]}: each string is one user message.
    texts = _strings(model_input, "inputs")
    return ParsedInput(
        [
            GenerationRequest(CHAT, messages=({"role": "user", "content": t},), sampling=sampling)
            for t in texts
        ],
        False,
    )


def _strings(value: Any, name: str) -> list[str]:
    if hasattr(value, "columns"):  # a pandas DataFrame with one text column
        if len(value.columns) != 1:
            raise bad_request(f"{name} must be a list of strings")
        value = value.iloc[:, 0]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise bad_request(f"{name} must be a non-empty list of strings")
    if not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name} must contain only strings")
    return list(value)
