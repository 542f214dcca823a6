"""A chat request as llama-server's completions request on token ids, and its answers back."""

from __future__ import annotations

from llamacpp.chat_answers import chat_answer, chat_chunk, completions_request


def test_the_request_keeps_the_sampling_and_stop_rules_and_drops_the_messages():
    chat = {
        "model": "tiny-ja",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0,
        "max_completion_tokens": 7,
        "stop": ["。"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [],
    }
    assert completions_request(chat, [1, 2, 3]) == {
        "model": "tiny-ja",
        "prompt": [1, 2, 3],
        "temperature": 0,
        "max_tokens": 7,
        "stop": ["。"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_completion_becomes_a_chat_answer_with_its_usage():
    completion = {
        "id": "cmpl-1",
        "created": 5,
        "model": "tiny-ja",
        "choices": [{"index": 0, "text": "赤です", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    assert chat_answer(completion) == {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "tiny-ja",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "赤です"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }


def test_chunks_carry_the_role_first_then_the_text_and_the_usage_last():
    first = chat_chunk({"id": "c", "choices": [{"index": 0, "text": "赤"}]}, first=True)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": "赤"}, "finish_reason": None}
    ]
    end = chat_chunk({"choices": [{"text": "", "finish_reason": "stop"}]}, first=False)
    assert end["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert chat_chunk({"choices": [], "usage": usage}, first=False)["usage"] == usage
