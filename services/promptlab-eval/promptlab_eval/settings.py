"""The knobs `promptlab-eval` reads from its environment (in the tracking container: the tracking
server's own), read once per command (cli.py)."""

from __future__ import annotations

from promptlab_stack.settings import AdminLogin, GenerationTimeout, RequestLimit, StackGateway
from promptlab_stack.timings import ui_proxy_timeout


class EvalSettings(GenerationTimeout, RequestLimit, AdminLogin, StackGateway):
    """With basic auth on the tracking server, the command acts as its admin; --judge's MLflow
    judge sends its questions to our gateway's OpenAI API. A data field may be MAX_REQUEST_MB long
    at most (as characters): a longer one could not reach a model (dataset.py)."""

    @property
    def ui_proxy_timeout_s(self) -> float:
        """How long the tracking server's gateway proxy waits for an answer."""
        return ui_proxy_timeout(self.generation_timeout_seconds)
