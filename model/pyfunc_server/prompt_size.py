"""Refuse a prompt that cannot fit the model's context before tokenizing it.

The exact check (prompt tokens against the context) needs the whole prompt tokenized first, and a
megabytes-long prompt takes seconds of CPU in the tokenizer (and in the chat template) before it
is refused. A token never stands for more text than its own longest vocabulary entry, so a prompt
of more than `context × longest entry` bytes needs more tokens than the context has: it is
refused in microseconds, with the same 400. The bound only ever overestimates (a vocabulary entry
as stored is at least as long as the bytes it stands for: byte-level BPE maps one byte to one
character, SentencePiece writes a space as the 3-byte "▁" and a byte as "<0xE3>"); the factor 2
covers normalizers that shorten text (NFKC turns "ﬁ" into "fi"). Prompts under the bound get the
exact check as before.
"""

from __future__ import annotations

from pyfunc_server.requests import CHAT, GenerationRequest, bad_request

NORMALIZER_MARGIN = 2


def longest_entry_bytes(tokenizer) -> int:
    """The UTF-8 length of the tokenizer's longest vocabulary entry (added tokens included)."""
    return max((len(entry.encode("utf-8")) for entry in tokenizer.get_vocab()), default=1)


def prompt_bytes_limit(tokenizer, context_length: int) -> int:
    return context_length * max(1, longest_entry_bytes(tokenizer)) * NORMALIZER_MARGIN


def prompt_bytes(request: GenerationRequest) -> int:
    if request.kind == CHAT:
        return sum(len(m["content"].encode("utf-8")) for m in request.messages)
    return len(request.prompt.encode("utf-8"))


def check_prompt_size(request: GenerationRequest, limit: int, context_length: int) -> None:
    size = prompt_bytes(request)
    if size > limit:
        raise bad_request(
            f"the prompt is {size:,} bytes of text, more than fits the model's context of "
            f"{context_length} tokens (at most {limit:,} bytes could); shorten it"
        )
