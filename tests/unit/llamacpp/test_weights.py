"""Which GGUF file serves each entry of MODELS, and the checks before a conversion (the
conversion itself runs for real in tests/integration/test_llamacpp_profile.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamacpp import weights
from llamacpp.settings import LlamaCppSettings
from llamacpp.weights import (
    ModelProblem,
    Source,
    Weights,
    check_disk,
    check_memory,
    converted_path,
    converter_problem,
    kv_cache_bytes,
    pick_quant_file,
    source_of,
)
from promptlab_stack.settings import ServedModel

MODEL = ServedModel("tiny", "/models/tiny")
LLM_JP_3_7B = {
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 24,
    "hidden_size": 3072,
}


@pytest.mark.parametrize(
    ("model_id", "source"),
    [
        ("/models/m.gguf", Source("gguf", local=Path("/models/m.gguf"))),
        ("/models/llm-jp", Source("checkpoint", local=Path("/models/llm-jp"))),
        (
            "llm-jp/llm-jp-3-3.7b-instruct",
            Source("checkpoint", repo="llm-jp/llm-jp-3-3.7b-instruct"),
        ),
        ("org/repo-GGUF:Q4_K_M", Source("gguf", repo="org/repo-GGUF", quant="Q4_K_M")),
        (
            "org/repo-GGUF/sub/m-Q8_0.gguf",
            Source("gguf", repo="org/repo-GGUF", file="sub/m-Q8_0.gguf"),
        ),
    ],
)
def test_each_kind_of_entry_names_its_source(model_id, source):
    assert source_of(model_id) == source


def test_a_quantization_picks_the_one_whole_file_with_its_name():
    files = [
        "README.md",
        "m-Q4_K_M.gguf",
        "m-Q4_K_S.gguf",
        "m-q8_0.gguf",
        "mmproj-Q8_0.gguf",
        "big/m-Q8_0-00001-of-00002.gguf",
    ]
    assert pick_quant_file(files, "Q4_K_M") == "m-Q4_K_M.gguf"
    assert pick_quant_file(files, "Q8_0") == "m-q8_0.gguf"
    assert pick_quant_file(files, "Q4_K") is None  # not a prefix of Q4_K_M's name
    assert pick_quant_file(files, "Q6_K") is None


def test_the_kv_cache_of_llm_jp_3_at_the_default_context():
    # 28 layers x 24 heads x 128 dimensions, K and V, 2 bytes each, 4096 positions: 1.41 GB.
    assert kv_cache_bytes(LLM_JP_3_7B, 4096) == 2 * 28 * 24 * 128 * 2 * 4096
    assert kv_cache_bytes({}, 4096) == 0


def test_models_that_do_not_fit_in_memory_stop_with_the_knobs_that_help(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"\0" * 1000)
    settings = LlamaCppSettings.from_env({})
    check_memory({"m": Weights(gguf)}, settings, available=1000)
    with pytest.raises(ModelProblem) as e:
        check_memory({"m": Weights(gguf, tmp_path, LLM_JP_3_7B)}, settings, available=10**9)
    assert "LLAMACPP_QUANT" in str(e.value) and "MAX_TOTAL_TOKENS=4096" in str(e.value)
    assert "Docker Desktop" in str(e.value)


def checkpoint(folder: Path, weight_bytes: int, dtype: str = "bfloat16") -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"torch_dtype": dtype}))
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(weight_bytes)
    return folder


def test_a_conversion_checks_the_disk_first(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path / "ckpt", 2_000_000)  # 1 M parameters in bf16
    monkeypatch.setattr(weights, "free_disk_bytes", lambda path: 1_200_000)
    settings = LlamaCppSettings.from_env({})  # Q8_0: 1.06 MB
    check_disk(MODEL, folder, settings, tmp_path)
    # Q4_K_M goes through an F16 file (2 MB) first.
    with pytest.raises(ModelProblem) as e:
        check_disk(MODEL, folder, LlamaCppSettings.from_env({"LLAMACPP_QUANT": "q4_k_m"}), tmp_path)
    assert "hf-cache" in str(e.value) and "Q4_K_M" in str(e.value)


def test_a_converted_file_is_named_by_the_model_its_revision_and_type(tmp_path):
    path = converted_path("llm-jp/llm-jp-3-3.7b-instruct", "abc123", "Q8_0", tmp_path)
    assert path == tmp_path / "llm-jp--llm-jp-3-3.7b-instruct" / "abc123-Q8_0.gguf"


def test_a_changed_local_checkpoint_converts_again(tmp_path):
    folder = checkpoint(tmp_path / "ckpt", 10)
    key = weights.local_checkpoint_key(folder)
    assert weights.local_checkpoint_key(folder) == key
    (folder / "config.json").write_text('{"torch_dtype": "float32", "changed": true}')
    assert weights.local_checkpoint_key(folder) != key


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (
            "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre",
            "BPE tokenizer that llama.cpp's converter does not recognize",
        ),
        ("ERROR:hf-to-gguf:Model FooForCausalLM is not supported", "architecture (FooForCausalLM)"),
        ("something\nValueError: bad tensor", "converter failed (ValueError: bad tensor)"),
    ],
)
def test_a_checkpoint_the_converter_cannot_handle_is_a_named_stop_with_the_fix(output, why):
    message = str(converter_problem(MODEL, output))
    assert why in message
    assert "published GGUF" in message and "pyfunc profile" in message


def test_a_missing_local_file_or_folder_says_where_to_put_it(tmp_path):
    settings = LlamaCppSettings.from_env({})
    for model_id in (f"{tmp_path}/none.gguf", str(tmp_path)):
        with pytest.raises(ModelProblem) as e:
            weights.weights_of(ServedModel("m", model_id), settings, print, tmp_path / "cache")
        assert "LOCAL_MODELS_DIR" in str(e.value)
