"""The llamacpp engine's settings, read once at start (start.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from promptlab_stack.settings import GenerationTimeout, ModelChoice, RequestLimit

# The types llama.cpp's converter writes itself; the others go through llama-quantize from F16.
CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")
Quant = Literal["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
# Bits a weight takes in each type, blocks' scales included (the disk and memory checks).
BITS_PER_WEIGHT = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K_M": 5.7,
    "Q4_K_M": 4.9,
    "Q4_0": 4.5,
}


class LlamaCppSettings(ModelChoice, GenerationTimeout, RequestLimit):
    # A Hugging Face checkpoint of MODELS is converted to this type once, at first start.
    llamacpp_quant: Annotated[
        Quant, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
    ] = Field("Q8_0", description="F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M or Q4_0")
    # The context, shared by the requests decoded together (one KV cache for all slots).
    max_total_tokens: int = Field(4096, ge=64, description="a whole number of tokens, at least 64")
    # Requests decoded together per model (llama.cpp's slots); more wait in its queue.
    llamacpp_parallel: int = Field(8, ge=1, le=256, description="a whole number from 1 to 256")
    # 0: llama.cpp's own choice (the CPU cores it may use).
    llamacpp_threads: int = Field(0, ge=0, description="a whole number of threads, 0 for auto")

    @property
    def bits_per_weight(self) -> float:
        return BITS_PER_WEIGHT[self.llamacpp_quant]
