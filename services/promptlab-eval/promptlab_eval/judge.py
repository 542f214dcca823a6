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
