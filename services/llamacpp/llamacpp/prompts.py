"""The prompt each model gets, as its Hugging Face tokenizer makes it: the chat template rendered by
`apply_chat_template` and tokenized by the same tokenizer (chat), or the text tokenized as
`tokenizer(prompt)` does (completions), exactly as the pyfunc model server does.

llama.cpp then gets token ids, never text: its own rendering of a template and its own tokenizer
can differ from Hugging Face's by a token (a SentencePiece space after a special token, a BOS),
which changes greedy answers. A model that is a published GGUF file has no Hugging Face tokenizer
here: its prompts go to llama-server as they are, rendered by its own `--jinja` template.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class PromptError(ValueError):
    """A prompt the tokenizer cannot make (a message it does not take, a template error)."""


class Prompts:
    def __init__(self, folders: dict[str, Path | None]) -> None:
        """`folders`: endpoint -> its checkpoint's folder (None for a published GGUF)."""
        from transformers import AutoTokenizer

        self.tokenizers: dict[str, Any] = {
            endpoint: AutoTokenizer.from_pretrained(folder)
            for endpoint, folder in folders.items()
            if folder is not None
        }

    def has_tokenizer(self, endpoint: str) -> bool:
        return endpoint in self.tokenizers

    def chat_ids(self, endpoint: str, messages: Any) -> list[int]:
        tokenizer = self.tokenizers[endpoint]
        if not tokenizer.chat_template:
            raise PromptError("this model's tokenizer has no chat template; use completions")
        if not isinstance(messages, list) or not messages:
            raise PromptError("messages must be a non-empty list")
        try:
            encoded = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except Exception as e:  # jinja2's errors, a message of a shape the template cannot take
            raise PromptError(f"the model's chat template cannot render these messages: {e}") from e
        return list(encoded["input_ids"])

    def completion_ids(self, endpoint: str, prompt: Any) -> list[int]:
        if not isinstance(prompt, str):
            raise PromptError("prompt must be a string")
        return list(self.tokenizers[endpoint](prompt)["input_ids"])
