"""Build a tiny, randomly initialised Llama chat model that loads like llm-jp-3 does.

There is no Hugging Face Hub here (nor in CI), so the tests, the benchmark and anyone trying the
stack offline build this instead: a byte-level BPE tokenizer trained on a few Japanese and English
sentences, a llm-jp-3 style chat template, and a small LlamaForCausalLM saved with
`save_pretrained`. It goes through exactly the same `from_pretrained` code as a real model.

Random weights produce nonsense text, so tests compare against `model.generate` on the same input
instead of reading the words. The output head is scaled up so that greedy choices are never
near-ties (a near-tie could flip between a batched and an unbatched forward pass).

Usage: python scripts/make_tiny_model.py OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CORPUS = [
    "りんごは赤い色をしています。バナナは黄色です。",
    "空は青く、海も青い。日本語の文章を書きます。",
    "こんにちは、今日はいい天気ですね。",
    "東京は日本の首都です。富士山は高い山です。",
    "The quick brown fox jumps over the lazy dog.",
    "MLflow tracks experiments; the gateway routes prompts to models.",
    "What colour is an apple? An apple is red or green.",
    "カタカナとひらがなと漢字を使います。絵文字も😀使えます。",
]

# The same shape as llm-jp-3-*-instruct's template: BOS, "### 指示:" / "### 応答:" turns.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### 指示:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### 応答:\n{{ message['content'] }}{{ eos_token }}\n\n"  # noqa: E501
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### 応答:\n{% endif %}"
)


# A second, different shape (ChatML, as Qwen and many others use), for comparing two models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATES = {"llm-jp": CHAT_TEMPLATE, "chatml": CHATML_TEMPLATE}


TOKENIZER_KINDS = ("bpe", "sentencepiece")


def build_tiny_model(
    output_dir: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    chat_style: str = "llm-jp",
    tokenizer_kind: str = "bpe",
) -> Path:
    """`chat_style` "llm-jp" (default) or "chatml": the chat template and its special tokens.
    `tokenizer_kind` "bpe" (a byte-level BPE `tokenizer.json`) or "sentencepiece" (a unigram
    SentencePiece `tokenizer.model` with byte fallback, as llm-jp-3 has: the kind llama.cpp's
    converter knows)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_kind == "sentencepiece":
        tokenizer = _sentencepiece_tokenizer(output_dir, vocab_size, chat_style)
    else:
        tokenizer = _bpe_tokenizer(output_dir, vocab_size, chat_style)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Spread the logits far apart so greedy decoding is stable to float rounding.
        model.lm_head.weight.mul_(40.0)
        # Never pick EOS by chance: tests want answers of a predictable length.
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
        if tokenizer_kind == "sentencepiece":
            # Nor a byte-fallback piece (<0xE3>): answers are whole characters, which every
            # engine writes the same way (a lone byte is U+FFFD in one, dropped in another).
            for byte in range(256):
                model.lm_head.weight[tokenizer.convert_tokens_to_ids(f"<0x{byte:02X}>")].zero_()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(output_dir)
    return output_dir


def _sentencepiece_tokenizer(output_dir: Path, vocab_size: int, chat_style: str):
    import io
    import json

    import sentencepiece
    from transformers import AutoTokenizer

    special = ["<|im_start|>", "<|im_end|>"] if chat_style == "chatml" else []
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        user_defined_symbols=special,
        hard_vocab_limit=False,  # the corpus is small: as many pieces as it gives
        minloglevel=2,
    )
    # transformers 5 reads tokenizer.model but does not write it back (save_pretrained writes
    # tokenizer.json): written here, where llama.cpp's converter looks for it.
    (output_dir / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "left",
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    tokenizer.chat_template = CHAT_TEMPLATES[chat_style]
    tokenizer.save_pretrained(output_dir)
    return tokenizer


def _bpe_tokenizer(output_dir: Path, vocab_size: int, chat_style: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>"]
    if chat_style == "chatml":
        special += ["<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATES[chat_style]
    tokenizer.save_pretrained(output_dir)
    return tokenizer


JUDGE_VERDICT = '{"result": "yes", "rationale": "The answer follows the criteria."}'


def build_judge_model(output_dir: str | Path, verdict: str = JUDGE_VERDICT) -> Path:
    """A tiny model whose greedy answer to any prompt is `verdict` (the JSON an MLflow judge
    expects), then EOS: the judge's side of the tests, where random weights would give no verdict.

    It is a bigram model wired by hand: attention and MLP outputs are zero, so each position's
    logits depend on its own token only; every token leads to the verdict (one added token), and
    the verdict leads to EOS. Judge prompts are long, so its context is 8192 tokens.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    output_dir = Path(build_tiny_model(output_dir, seed=2))
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    tokenizer.add_tokens([verdict])
    tokenizer.save_pretrained(output_dir)
    verdict_id, eos_id = tokenizer.convert_tokens_to_ids(verdict), tokenizer.eos_token_id
    config = LlamaConfig.from_pretrained(output_dir)
    config.vocab_size, config.max_position_embeddings = len(tokenizer), 8192
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0  # every token: "say the verdict"
        embeddings[verdict_id, 0], embeddings[verdict_id, 1] = 0.0, 1.0  # the verdict: "stop"
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[verdict_id, 0] = 40.0
        model.lm_head.weight[eos_id, 1] = 40.0
    model.generation_config = LlamaForCausalLM.from_pretrained(output_dir).generation_config
    model.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--chat-style", choices=sorted(CHAT_TEMPLATES), default="llm-jp")
    parser.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="bpe")
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.output_dir,
        seed=args.seed,
        vocab_size=args.vocab_size,
        chat_style=args.chat_style,
        tokenizer_kind=args.tokenizer,
    )
    print(f"tiny model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
