"""Rules for the text of an answer, applied wherever an answer leaves the stack's engines."""

from __future__ import annotations


def drop_incomplete_utf8_tail(text: str) -> str:
    """Drop the replacement characters that end an answer cut inside a multi-byte character.

    Byte-fallback tokenizers (llm-jp-3's) and byte-level ones decode a partial UTF-8 sequence as
    U+FFFD, so a Japanese answer cut by max_tokens can end in a broken character. The token counts
    stay those of the tokens generated; vLLM's incremental detokenizer likewise holds such bytes
    back."""
    return text.rstrip("\ufffd")
