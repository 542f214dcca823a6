"""What plain transformers answers: the expected output for greedy requests through the stack.

The stack drops a trailing incomplete UTF-8 sequence (U+FFFD) from an answer cut short; so does
the reference, with the same function.
"""

from __future__ import annotations

from promptlab_stack.text import drop_incomplete_utf8_tail


def greedy_chat(tokenizer, model, messages: list[dict], max_new_tokens: int) -> str:
    import torch

    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
    return drop_incomplete_utf8_tail(
        tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)
    )


def greedy_completion(tokenizer, model, prompt: str, max_new_tokens: int) -> str:
    import torch

    enc = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
    return drop_incomplete_utf8_tail(
        tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)
    )
