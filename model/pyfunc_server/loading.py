"""Load a Hugging Face causal LM for serving: its device and dtype, the torch thread count, the
linear layers' layout, and a tokenizer that left-pads. Nothing here decodes (generator.py does).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from pyfunc_server.prepacked_weights import prepack_linear_layers
from pyfunc_server.settings import ModelServerSettings
from pyfunc_server.threads import choose_torch_threads

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model_id: str
    model: Any  # the AutoModelForCausalLM, in eval mode, on `device`
    tokenizer: Any  # pads on the left, with a pad token
    device: str
    torch_threads: int  # the CPU threads its decoding uses (threads.py)
    memory_bytes: int  # weights and buffers as loaded, before prepacking


def pick_device(requested: str) -> str:
    import torch

    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={requested} was asked for, but no CUDA GPU is visible")
    return requested


def quiet_openmp_threads() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY says otherwise).

    PyTorch's CPU kernels run on OpenMP threads that, by default, spin for a while after each
    parallel region. Between decoding steps that spinning takes the CPU from the server's own
    threads (HTTP, JSON, the batcher); on a small machine it made concurrent requests slower
    than one at a time. Only effective before torch is first imported, i.e. in the model server.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model(settings: ModelServerSettings, model_id: str) -> LoadedModel:
    """Load `model_id` (a Hub repo id or a folder) as `settings` say (settings.py has every knob).
    The torch thread count follows the model's size unless TORCH_THREADS sets it (threads.py says
    why); the linear layers are prepacked when PREPACK_WEIGHTS decides so (prepacked_weights.py)."""
    quiet_openmp_threads()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)

    device = pick_device(settings.device)
    # bf16 halves memory on GPUs that do it natively; CPUs are fastest and exact in float32.
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    started = time.monotonic()
    logger.info("Loading tokenizer for %s (downloads on first use into HF_HOME)", model_id)
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    logger.info("Loading weights of %s onto %s as %s", model_id, device, dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
    model = model.to(device)
    model.eval()
    logger.info("Model %s ready in %.1f s", model_id, time.monotonic() - started)
    parameters = sum(p.numel() for p in model.parameters())
    # Counted before prepacking: prepacked weights are buffers in their own layout.
    memory_bytes = int(model.get_memory_footprint())
    torch_threads, why = choose_torch_threads(settings.torch_threads, parameters)
    if device == "cpu":
        torch.set_num_threads(torch_threads)
        logger.info("%d torch threads for %s: %s", torch_threads, model_id, why)
    # After the thread count is set: `auto` times the layers with the threads they will use.
    logger.info("%s: %s", model_id, prepack_linear_layers(model, settings.prepack_weights))

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only models must be left-padded so every row's new tokens start at one column.
    tokenizer.padding_side = "left"
    return LoadedModel(model_id, model, tokenizer, device, torch_threads, memory_bytes)
