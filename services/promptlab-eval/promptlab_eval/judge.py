"""MLflow's own GenAI judge (`mlflow.genai.judges.make_judge`) on one of the stack's endpoints.

MLflow's judges reach a model through a provider URI; `endpoints:/name` needs LiteLLM for chat
prompts, which the image does not carry. The MLflow AI Gateway serves OpenAI's chat API at
`/v1/chat/completions` with the endpoint's name as the model, so the judge uses MLflow's own
OpenAI adapter pointed there: `openai:/<endpoint>` with that URL as its base_url.

The package's one MLflow import, made only for `--judge` (the `judge` extra; the tracking image
has MLflow): everything else talks to the tracking server over REST.
"""

from __future__ import annotations

import os

JUDGE_NAME = "judge"


def make_judge(endpoint: str, criteria: str, gateway_url: str):
    from mlflow.genai.judges import make_judge as mlflow_make_judge

    # MLflow's OpenAI adapter wants a key; the stack's gateway ignores it.
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-the-local-gateway")
    instructions = (
        f"{criteria.strip()}\n\nThe prompt: {{{{ inputs }}}}\n"
        "The answer to judge: {{ outputs }}\nAnswer yes or no."
    )
    return mlflow_make_judge(
        name=JUDGE_NAME,
        instructions=instructions,
        model=f"openai:/{endpoint}",
        base_url=f"{gateway_url.rstrip('/')}/v1/chat/completions",
    )


PAIRWISE_JUDGE_NAME = "pairwise_judge"
# The judge's verdicts: the first answer is better (yes), the second is (no), or neither (tie).
PAIRWISE_VERDICTS = ("yes", "no", "tie")
DEFAULT_PAIRWISE_CRITERIA = "Which answer serves the request better: correct, helpful and natural?"


def make_pairwise_judge(endpoint: str, criteria: str | None, gateway_url: str):
    """MLflow's judge asked to compare two answers to one request: "yes" when the first is better,
    "no" when the second is, "tie" when neither is (pairwise.py swaps the order on half the pairs,
    so that a judge that favours a position favours neither side)."""
    from typing import Literal

    from mlflow.genai.judges import make_judge as mlflow_make_judge

    os.environ.setdefault("OPENAI_API_KEY", "unused-by-the-local-gateway")
    instructions = (
        f"{(criteria or DEFAULT_PAIRWISE_CRITERIA).strip()}\n\n"
        "The request: {{ inputs }}\n"
        "The two answers, `first` and `second`: {{ outputs }}\n"
        "Is the first answer better than the second? Answer yes if the first is better, no if "
        "the second is better, tie if neither is."
    )
    return mlflow_make_judge(
        name=PAIRWISE_JUDGE_NAME,
        instructions=instructions,
        model=f"openai:/{endpoint}",
        base_url=f"{gateway_url.rstrip('/')}/v1/chat/completions",
        feedback_value_type=Literal["yes", "no", "tie"],
    )
