"""What the arena page sends: a battle to generate, a vote, a dataset to read. Each is checked
before anything is generated or written; a problem is a 400 that names the field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

VOTES = ("A", "B", "tie", "both_bad")
MAX_ENDPOINTS = 64


class ArenaRequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("experiment_id", check_fields=False)
    @classmethod
    def _experiment_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("pick an experiment")
        return value.strip()


class BattleRequest(_Request):
    experiment_id: str
    # A prompt, or a template with {{ variables }} (the Prompt Engineering UI's syntax).
    prompt: str
    variables: dict[str, str] = Field(default_factory=dict)
    system: str = ""
    # The Prompt Registry version the template came from (prompts:/name/version), recorded.
    prompt_uri: str = ""
    # The endpoints taking part; empty: every chat endpoint of the gateway.
    endpoints: list[str] = Field(default_factory=list, max_length=MAX_ENDPOINTS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=32768)


class VoteRequest(_Request):
    experiment_id: str
    battle_id: str = Field(min_length=1, max_length=64)
    vote: Literal["A", "B", "tie", "both_bad"]


class LeaderboardRunRequest(_Request):
    experiment_id: str


def parse(model: type[BaseModel], data) -> BaseModel:
    """`data` (the decoded JSON body) as `model`, or ArenaRequestError(400) naming the field."""
    if not isinstance(data, dict):
        raise ArenaRequestError(400, "The request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            where = ".".join(str(part) for part in error["loc"]) or "body"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ArenaRequestError(400, "; ".join(problems)) from None
