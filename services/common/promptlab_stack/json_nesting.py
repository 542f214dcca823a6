"""How deeply a JSON request body nests, checked before any hop parses it.

Python's JSON decoder recurses once per level and raises RecursionError (not ValueError) past the
interpreter's recursion limit, which MLflow's apps and our proxy would answer with a 500 and a
traceback. A prompt's request nests a few levels; every hop refuses one nested past MAX_NESTING
with a 400 instead (promptlab_stack.body_limit, tracking.gateway_proxy).
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

# Well under the decoder's limit (the recursion limit, 1000 by default, less the app's own frames).
MAX_NESTING = 500

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
# Opening brackets count +1, closing ones -1 (0xff as a signed byte).
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body` (brackets inside strings don't count).
    Only bodies with more opening brackets than MAX_NESTING are scanned."""
    if body.count(b"[") + body.count(b"{") <= MAX_NESTING:
        return 0
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    return max(accumulate(array("b", brackets.translate(_STEP))), default=0)


def too_deep(body: bytes, service: str) -> str | None:
    """The 400's message when `body` nests past MAX_NESTING, naming the hop; else None."""
    if nesting(body) > MAX_NESTING:
        return (
            f"The request body's JSON is nested more than {MAX_NESTING} levels deep; "
            f"{service} does not read it"
        )
    return None
