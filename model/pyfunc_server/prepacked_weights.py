"""Linear layers with their weights prepacked for oneDNN, on CPUs where that is faster.

A float32 `nn.Linear` on a CPU multiplies through MKL's sgemm with the weight transposed; for the
few rows a decoding step has (one per running request) that path is slow, and a second row costs
almost as much as the first. With the same weights prepacked in oneDNN's blocked layout
(`torch.utils.mkldnn.MkldnnLinear`, which torch provides for this) a step is faster, most of all
for several rows, and prefill is faster too (docs/performance.md has the measurements). Two rows
then cost little more than one, so a request that joins a running one is answered in about its
own time, and concurrent clients get more tokens per second.

Nothing else changes: same float32 weights, same model code, greedy answers equal to plain
`model.generate` (the unit tests and the benchmark check it; the products differ only in rounding,
like any change of batch size).

PREPACK_WEIGHTS=auto (the default) decides at start, from the machine and the model: it times one
of the model's linear layers both ways, for one row and for eight, and prepacks when oneDNN is
clearly faster (on the tiny test model the per-call conversion costs more than it saves). `on`
and `off` skip the measurement. Only CPU float32 models are concerned; a weight shared with
another module (tied embeddings) stays dense, since prepacking it would keep a second copy.

Memory: dense weights are pages of the weight files that transformers maps; prepacked ones are
the server's own memory, of the model's size (the embeddings are copied out of the files too, so
that no mapping is kept alive: more resident memory than the dense model's mapped pages, which
leave most of the embedding table on disk). The start reads each weight once more while it
prepacks.
"""

from __future__ import annotations

import time
from collections import Counter

# oneDNN must be at least this much faster (time ratio) for `auto` to prepack: below it the
# difference is within the noise of a start-up measurement.
REQUIRED_SPEEDUP = 1.15
# The layer timed for `auto`: the largest one with at most this many weights (the vocabulary
# projection of a 3.7B model has 300 M; a copy of it only to time it would cost 1.2 GB).
MEASURED_LAYER_MAX_WEIGHTS = 1 << 25


def prepack_linear_layers(model, setting: str) -> str:
    """Prepack `model`'s linear layers when `setting` ("auto", "on", "off") and the measurement
    say so; returns what was done and why, for the log."""
    import torch

    if setting == "off":
        return "dense linear layers (PREPACK_WEIGHTS=off)"
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return (
            f"dense linear layers ({model.device.type}, {model.dtype}: "
            "only CPU float32 is prepacked)"
        )
    try:
        from torch.utils.mkldnn import MkldnnLinear
    except ImportError:  # a torch build or version without it
        return "dense linear layers (this torch has no torch.utils.mkldnn.MkldnnLinear)"
    if not torch.backends.mkldnn.is_available():
        return "dense linear layers (this torch was built without oneDNN)"
    layers = _prepackable(model)
    if not layers:
        return "dense linear layers (none can be prepacked)"
    why = "PREPACK_WEIGHTS=on"
    if setting == "auto":
        try:
            dense_s, packed_s = time_layer(_measured_layer(layers), MkldnnLinear)
        except Exception as e:  # noqa: BLE001 - oneDNN cannot run here: the dense layers serve
            return f"dense linear layers (oneDNN failed on this CPU: {type(e).__name__}: {e})"
        why = (
            f"{packed_s * 1e3:.2f} ms against {dense_s * 1e3:.2f} ms dense for 1 and 8 rows of its "
            f"largest measured layer; PREPACK_WEIGHTS=on/off overrides"
        )
        if dense_s / packed_s < REQUIRED_SPEEDUP:
            return f"dense linear layers (oneDNN prepacked: {why})"
    # Layer by layer, each dense weight freed as soon as its prepacked copy exists (the peak is
    # one layer more than the model).
    count = len(layers)
    with torch.no_grad():
        while layers:
            parent, name, layer = layers.pop()
            setattr(parent, name, MkldnnLinear(layer, torch.float32))
            del layer  # the last reference to the dense weight
        _copy_into_memory(model)
    return f"{count} linear layers prepacked for oneDNN ({why})"


def _copy_into_memory(model) -> None:
    """Copy the remaining dense weights (embeddings, norms) out of the weight files.

    transformers maps safetensors files into memory, and one tensor left on a mapping keeps the
    whole file mapped, with every page the prepacking read still counted in the server's
    resident memory, far more than the model's size. Once nothing points into the files, the
    mappings go, and the server holds the model's own size."""
    seen = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen or tensor.is_mkldnn:
            continue
        seen.add(id(tensor))
        tensor.data = tensor.data.clone()


def _prepackable(model) -> list[tuple]:
    """(parent module, attribute name, layer) of every plain `nn.Linear` whose weight is its own."""
    import torch

    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear and uses[id(child.weight)] == 1:
                found.append((parent, name, child))
    return found


def _measured_layer(layers: list[tuple]):
    small = [layer for _, _, layer in layers if layer.weight.numel() <= MEASURED_LAYER_MAX_WEIGHTS]
    if small:
        return max(small, key=lambda layer: layer.weight.numel())
    return min((layer for _, _, layer in layers), key=lambda layer: layer.weight.numel())


def time_layer(layer, packed_class, rows=(1, 8), repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` seconds of `layer` dense and prepacked, summed over batches of `rows`."""
    import torch

    with torch.no_grad():
        packed = packed_class(layer, torch.float32)
    totals = {"dense": 0.0, "packed": 0.0}
    with torch.inference_mode():
        for n in rows:
            x = torch.randn(n, layer.in_features)
            for kind, module in (("dense", layer), ("packed", packed)):
                module(x)  # warm up: first calls allocate
                totals[kind] += min(_timed(module, x) for _ in range(repeats))
    return totals["dense"], totals["packed"]


def _timed(module, x) -> float:
    started = time.perf_counter()
    module(x)
    return time.perf_counter() - started
