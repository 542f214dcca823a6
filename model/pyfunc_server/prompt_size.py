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

A chat counts its messages too: the chat template writes some text for each (a role header, a
separator), so hundreds of thousands of empty messages are refused here as well instead of reaching
the template and the tokenizer. That text is measured once from the template itself, as the least
any one more message adds, whatever its role (0 when the template cannot tell).
"""

from __future__ import annotations

from pyfunc_server.requests import CHAT, GenerationRequest, bad_request

NORMALIZER_MARGIN = 2


def longest_entry_bytes(tokenizer) -> int:
    """The UTF-8 length of the tokenizer's longest vocabulary entry (added tokens included)."""
    return max((len(entry.encode("utf-8")) for entry in tokenizer.get_vocab()), default=1)


def prompt_bytes_limit(tokenizer, context_length: int) -> int:
    return context_length * max(1, longest_entry_bytes(tokenizer)) * NORMALIZER_MARGIN


def message_overhead_bytes(tokenizer) -> int:
    """The fewest bytes of text the chat template writes for one more message (its content aside),
    over the roles it accepts after a user message; 0 without a template or when it refuses."""
    if not getattr(tokenizer, "chat_template", None):
        return 0
    first = [{"role": "user", "content": "a"}]

    def rendered(messages) -> int | None:
        try:
            return len(tokenizer.apply_chat_template(messages, tokenize=False).encode("utf-8"))
        except Exception:  # a template may refuse a role or an order: that role tells nothing
            return None

    base = rendered(first)
    if base is None:
        return 0
    more = [rendered(first + [{"role": role, "content": ""}]) for role in ROLES]
    return max(0, min((n - base for n in more if n is not None), default=0))


ROLES = ("user", "assistant", "system")


def prompt_bytes(request: GenerationRequest, message_overhead: int = 0) -> int:
    if request.kind == CHAT:
        content = sum(len(m["content"].encode("utf-8")) for m in request.messages)
        return content + message_overhead * len(request.messages)
    return len(request.prompt.encode("utf-8"))


def check_prompt_size(
    request: GenerationRequest, limit: int, context_length: int, message_overhead: int = 0
) -> None:
    size = prompt_bytes(request, message_overhead)
    if size > limit:
        counted = (
            f", counting the template's text for its {len(request.messages):,} messages"
            if request.kind == CHAT and message_overhead
            else ""
        )
        raise bad_request(
            f"the prompt is {size:,} bytes of text, more than fits the model's context of "
            f"{context_length} tokens (at most {limit:,} bytes could{counted}); shorten it"
        )
