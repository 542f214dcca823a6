"""promptlab_stack.json_nesting: the depth every hop checks before parsing a request body."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from promptlab_stack.json_nesting import MAX_NESTING, nesting, too_deep


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_the_depth_past_the_limit_is_refused_and_the_limit_itself_is_read():
    assert too_deep(nested(MAX_NESTING), "the gateway") is None
    problem = too_deep(nested(MAX_NESTING + 1), "the gateway")
    assert problem and "nested more than 500 levels deep; the gateway" in problem
    assert json.loads(nested(MAX_NESTING))  # what the limit lets through, Python still parses


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"content": "[" * 2_000 + '\\"{' * 700}).encode()
    assert nesting(text) <= 1
    assert too_deep(text, "x") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\あa'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@given(json_values, st.integers(min_value=MAX_NESTING - 5, max_value=MAX_NESTING + 5))
def test_the_scan_measures_what_the_decoder_would_recurse_into(value, extra):
    # Wrapped near the limit; the scan skips bodies with too few brackets to reach it.
    body = b"[" * extra + json.dumps(value, ensure_ascii=False).encode() + b"]" * extra
    depth = extra + depth_of(value)
    assert (too_deep(body, "x") is not None) == (depth > MAX_NESTING)
    assert nesting(body) in (0, depth)
