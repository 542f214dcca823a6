"""A row's answer as it is generated: the text that can be shown after each step, such that the
pieces joined are exactly the answer the row ends with (`StopRules.finish`).

Two things are held back until the next step shows what they are:
- the bytes of a character not yet complete (a byte-level tokenizer decodes them as U+FFFD);
- text at the end that could be the beginning of a stop string (the answer is cut before a stop
  string, which must never be shown, even in part).
The decoded text is taken from all the row's tokens each time (as `finish` does), so the pieces
join to the answer for any decoder whose text for more tokens begins with its text for fewer
(byte-level BPE and SentencePiece with byte fallback, llm-jp-3's). Text already sent cannot be
taken back: for a decoder that rewrites earlier text, nothing more is streamed once the two
differ (`diverged`, logged by stream_route.py) and the stream ends with the answer's rest only
where the answer still begins with what was sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from promptlab_stack.text import drop_incomplete_utf8_tail
from pyfunc_server.sampling import RowSettings


def stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could begin one of `stops`."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class TextDeltas:
    """The new text to show for one row after each step (`push`), then the rest (`rest`)."""

    def __init__(self, tokenizer, eos_ids: set[int], row: RowSettings):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.stops = row.stop
        self.sent = ""
        self.diverged = False  # the decoded text no longer begins with what was sent

    def push(self, new_ids: Sequence[int]) -> str:
        """The text to show now that the row has `new_ids` (and has not ended)."""
        if self.diverged:
            return ""
        ids = [t for t in new_ids if t not in self.eos_ids]
        text = drop_incomplete_utf8_tail(self.tokenizer.decode(ids, skip_special_tokens=True))
        if any(stop in text for stop in self.stops):
            return ""  # the row ends at this step (StopRules.ends): `rest` finishes it
        safe = text[: len(text) - stop_prefix_length(text, self.stops)]
        return self._advance(safe)

    def rest(self, answer: str) -> str:
        """The end of the row's `answer` (its whole text) not yet shown."""
        if self.diverged or not answer.startswith(self.sent):
            self.diverged = True
            return ""
        return self._advance(answer)

    def _advance(self, text: str) -> str:
        if not text.startswith(self.sent):
            self.diverged = True
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta
