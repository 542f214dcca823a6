"""A model of llm-jp-3-3.7b's width with random weights: what a real model costs per token on CPU.

The tiny model (scripts/make_tiny_model.py) is so small that HTTP and Python decide its speed;
this one has llm-jp-3-3.7b-instruct's width (hidden 3072, intermediate 8192, 24 heads, vocabulary
99584, untied output head) and a few layers (2 by default, `--real-layers`), so the matrix work
per token is that of the real model's embedding, output head and `layers` of its 28 layers.
It uses the tiny model's tokenizer and chat template: output rows past the tokenizer's vocabulary
are zero (they still cost their multiply) and the others are scaled up, so greedy answers are
decodable text, never near-ties, and never EOS, so every answer is as long as asked.
"""

from __future__ import annotations

from pathlib import Path

LLM_JP_3_3_7B = dict(
    hidden_size=3072,
    intermediate_size=8192,
    num_attention_heads=24,
    num_key_value_heads=24,
    vocab_size=99584,
    max_position_embeddings=4096,
)


def build_real_shape_model(
    output_dir: str | Path, layers: int = 2, seed: int = 0, tokenizer_kind: str = "bpe"
) -> Path:
    """Build it once (about 3.4 GB for 2 layers, 15 GB for 28, float32); an existing folder is
    reused. `tokenizer_kind`: the tiny model's (scripts/make_tiny_model.py); "sentencepiece", as
    llm-jp-3 has, is the kind llama.cpp's converter reads."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from scripts.make_tiny_model import build_tiny_model

    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists():
        return output_dir
    # Tokenizer, chat template (its weights are replaced below).
    build_tiny_model(
        output_dir,
        tokenizer_kind=tokenizer_kind,
        vocab_size=400 if tokenizer_kind == "sentencepiece" else 512,
    )
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        **LLM_JP_3_3_7B,
        num_hidden_layers=layers,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        head = model.lm_head.weight
        head[len(tokenizer) :].zero_()
        head[: len(tokenizer)].mul_(40.0)
        head[tokenizer.eos_token_id].zero_()
        if tokenizer_kind == "sentencepiece":  # whole characters only, as the tiny model
            for byte in range(256):
                head[tokenizer.convert_tokens_to_ids(f"<0x{byte:02X}>")].zero_()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    for stale in output_dir.glob("*.safetensors"):
        stale.unlink()
    model.save_pretrained(output_dir)
    return output_dir
