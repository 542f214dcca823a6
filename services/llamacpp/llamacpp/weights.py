"""Each model of MODELS as one GGUF file for llama-server.

An entry of MODELS is one of:
  /models/<file>.gguf              a GGUF file in LOCAL_MODELS_DIR: served as it is;
  <org>/<repo>/<file>.gguf         a GGUF file on the Hub: downloaded into the HF cache;
  <org>/<repo>:<QUANT>             the GGUF file of a Hub repo whose name has QUANT (Q4_K_M, ...);
  <org>/<repo> or /models/<folder> a Hugging Face checkpoint: converted once, with llama.cpp's
                                   own converter (and quantizer), to LLAMACPP_QUANT, and kept in
                                   the hf-cache volume under gguf/.
A converted file is keyed by the checkpoint's revision (the Hub's commit, or the local files'
names, sizes and times) and the type, so a new revision or another LLAMACPP_QUANT converts again
and switching back reuses the earlier file. Before converting, the disk space it needs is checked;
before serving, the memory. What cannot work (no such file, a tokenizer or architecture the
converter does not know, too little disk or memory) is a ModelProblem whose message says the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamacpp.settings import CONVERTER_TYPES, LlamaCppSettings
from promptlab_stack.settings import ServedModel
from promptlab_stack.topology import HF_HOME, LEGACY_LOCAL_MODELS_DIR, LOCAL_MODELS_DIR

logger = logging.getLogger(__name__)

LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", "/opt/llama.cpp"))
GGUF_CACHE = HF_HOME / "gguf"
# What a checkpoint's conversion reads (weights, configs, tokenizer, chat template).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.tiktoken"]
FIX = "name a published GGUF of the model in MODELS (org/repo:Q8_0, or /models/<file>.gguf), or use the pyfunc profile"  # noqa: E501


class ModelProblem(Exception):
    """A model that cannot be served as it is named; the message says why and the fix."""

    def __init__(self, model: ServedModel, message: str) -> None:
        super().__init__(message)
        self.model = model


@dataclass(frozen=True)
class Weights:
    """What serves a model: its GGUF file and, when it was converted here, the checkpoint it came
    from (whose tokenizer makes the prompts: prompts.py) and that checkpoint's config.json."""

    gguf: Path
    checkpoint: Path | None = None
    config: dict | None = None


@dataclass(frozen=True)
class Source:
    kind: str  # "gguf" (a file to serve as it is) or "checkpoint" (to convert)
    local: Path | None = None  # a file or folder in the container
    repo: str = ""  # a Hub repo
    file: str = ""  # a GGUF file in `repo`
    quant: str = ""  # a GGUF of `repo` whose file name has this


HUB_GGUF_FILE = re.compile(r"^([\w.-]+/[\w.-]+)/(.+\.gguf)$", re.IGNORECASE)
HUB_GGUF_QUANT = re.compile(r"^([\w.-]+/[\w.-]+):([\w.-]+)$")


def local_path(model_id: str) -> Path:
    """A /models/... path, or the same under the host's ./models (the old default folder) when it
    is only there."""
    path = Path(model_id)
    if path.is_relative_to(LOCAL_MODELS_DIR) and not path.exists():
        legacy = LEGACY_LOCAL_MODELS_DIR / path.relative_to(LOCAL_MODELS_DIR)
        if legacy.exists():
            logger.warning("%s: read from ./models, the old folder; move it to ./weights", legacy)
            return legacy
    return path


def source_of(model_id: str) -> Source:
    if model_id.startswith("/"):
        path = local_path(model_id)
        return Source("gguf" if path.suffix.lower() == ".gguf" else "checkpoint", local=path)
    if m := HUB_GGUF_FILE.match(model_id):
        return Source("gguf", repo=m[1], file=m[2])
    if m := HUB_GGUF_QUANT.match(model_id):
        return Source("gguf", repo=m[1], quant=m[2])
    return Source("checkpoint", repo=model_id)


def pick_quant_file(files: list[str], quant: str) -> str | None:
    """The GGUF file of a repo's listing whose name has `quant` (one file, not a split one)."""
    wanted = re.compile(rf"(^|[^A-Za-z0-9]){re.escape(quant)}([.-]|$)", re.IGNORECASE)
    matches = sorted(
        f
        for f in files
        if f.lower().endswith(".gguf") and wanted.search(Path(f).name) and "mmproj" not in f.lower()
    )
    whole = [f for f in matches if not re.search(r"-\d{5}-of-\d{5}\.gguf$", f)]
    return (whole or matches)[0] if matches else None


# -- the checks ----------------------------------------------------------------------------
def free_disk_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def checkpoint_weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def parameters_of(folder: Path) -> float:
    """The checkpoint's weights, counted from its safetensors files and its dtype."""
    config = read_config(folder)
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return checkpoint_weight_bytes(folder) / (4 if "32" in dtype else 2)


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def kv_cache_bytes(config: dict, tokens: int) -> int:
    """llama.cpp's KV cache in F16 for `tokens` positions (0 when the config does not say)."""
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0
    return 2 * layers * kv_heads * head_dim * 2 * tokens


def check_disk(model: ServedModel, folder: Path, settings: LlamaCppSettings, cache: Path) -> None:
    quant = settings.llamacpp_quant
    params = parameters_of(folder)
    needed = params * settings.bits_per_weight / 8
    if quant not in CONVERTER_TYPES:
        needed += params * 2  # the F16 file that llama-quantize reads
    free = free_disk_bytes(cache)
    if needed * 1.05 > free:
        raise ModelProblem(
            model,
            f"converting {model.model_id} to {quant} needs about {needed / 1e9:.1f} GB on the "
            f"disk of the hf-cache volume, which has {free / 1e9:.1f} GB free. Fix: free disk "
            "space (docker system df), or a smaller LLAMACPP_QUANT",
        )


def check_memory(models: dict[str, Weights], settings: LlamaCppSettings, available: int) -> None:
    """Every model's file and KV cache in the memory the container may use."""
    needed = sum(
        w.gguf.stat().st_size + kv_cache_bytes(w.config or {}, settings.max_total_tokens)
        for w in models.values()
    )
    if needed > available:
        raise ModelProblem(
            ServedModel(",".join(models), ",".join(str(w.gguf) for w in models.values())),
            f"the models need about {needed / 1e9:.1f} GB of memory (weights and a context of "
            f"MAX_TOTAL_TOKENS={settings.max_total_tokens}), and the container may use "
            f"{available / 1e9:.1f} GB. Fix: a smaller LLAMACPP_QUANT (Q4_K_M), fewer MODELS, a "
            "smaller MAX_TOTAL_TOKENS, or more memory for Docker (Docker Desktop: Settings > "
            "Resources)",
        )


# -- getting the file ----------------------------------------------------------------------
def local_checkpoint_key(folder: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", model_id.strip("/"))


def converted_path(model_id: str, key: str, quant: str, cache: Path = GGUF_CACHE) -> Path:
    return cache / slug(model_id) / f"{key}-{quant}.gguf"


def converter_problem(model: ServedModel, output: str) -> ModelProblem:
    """What the converter's output says went wrong, in words with the fix."""
    if "pre-tokenizer was not recognized" in output:
        why = "its tokenizer is a BPE tokenizer that llama.cpp's converter does not recognize"
    elif m := re.search(r"Model (\w+) is not supported", output):
        why = f"llama.cpp's converter does not support its architecture ({m[1]})"
    elif "tokenizer" in output.lower() and "Error" in output:
        why = "llama.cpp's converter could not read its tokenizer"
    else:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        why = f"llama.cpp's converter failed ({lines[-1][:300] if lines else 'no output'})"
    return ModelProblem(model, f"{model.model_id} cannot be converted to GGUF: {why}. Fix: {FIX}")


def run_tool(
    command: list[str], on_line: Callable[[str], None], model: ServedModel
) -> tuple[int, str]:
    """Run a conversion step; every line (tqdm's \\r updates too) goes to `on_line` and the log.
    Returns its status and the last of its output."""
    logger.info("%s: %s", model.endpoint, " ".join(command))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    tail: list[str] = []
    buffer = b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        buffer += chunk
        *lines, buffer = re.split(rb"[\r\n]", buffer)
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                on_line(line)
                tail = (tail + [line])[-40:]
    return proc.wait(), "\n".join(tail)


def convert(
    model: ServedModel,
    folder: Path,
    out: Path,
    settings: LlamaCppSettings,
    report: Callable[[str], None],
) -> None:
    """`folder` (a checkpoint) to `out` in LLAMACPP_QUANT: the converter writes F32, F16, BF16
    and Q8_0 itself; the other types are quantized from an F16 file. Written beside `out` and
    renamed when whole, so a stopped conversion starts over instead of serving half a file."""
    quant = settings.llamacpp_quant
    out.parent.mkdir(parents=True, exist_ok=True)
    direct = quant in CONVERTER_TYPES
    first = out.with_name(out.name + (".partial" if direct else ".f16.partial"))

    def progress(step: str) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            logger.info("%s: %s", model.endpoint, line)
            if m := re.search(r"(\d+)%\|", line):
                report(f"{step}: {m[1]}%")

        return on_line

    report(f"converting to {quant if direct else 'F16'} with llama.cpp's converter")
    status, output = run_tool(
        [
            sys.executable,
            str(LLAMA_CPP_DIR / "convert_hf_to_gguf.py"),
            str(folder),
            "--outtype",
            (quant if direct else "F16").lower(),
            "--outfile",
            str(first),
        ],
        progress(f"converting to {quant if direct else 'F16'}"),
        model,
    )
    if status != 0:
        first.unlink(missing_ok=True)
        raise converter_problem(model, output)
    if not direct:
        second = out.with_name(out.name + ".partial")
        report(f"quantizing to {quant} with llama-quantize")
        status, output = run_tool(
            [str(LLAMA_CPP_DIR / "bin" / "llama-quantize"), str(first), str(second), quant],
            progress(f"quantizing to {quant}"),
            model,
        )
        first.unlink(missing_ok=True)
        if status != 0:
            second.unlink(missing_ok=True)
            lines = output.strip().splitlines()
            raise ModelProblem(
                model,
                f"llama-quantize could not make {quant} of {model.model_id} "
                f"({lines[-1][:300] if lines else 'no output'}). Fix: another LLAMACPP_QUANT",
            )
        first = second
    os.replace(first, out)


def hub_download(repo: str, files: list[str] | None, file: str = "") -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    if file:
        return Path(hf_hub_download(repo, file))
    return Path(snapshot_download(repo, allow_patterns=files))


def hub_listing(repo: str) -> list[str]:
    from huggingface_hub import list_repo_files

    return list_repo_files(repo)


def hub_problem(model: ServedModel, error: Exception) -> ModelProblem:
    text = str(error).strip().splitlines()
    return ModelProblem(
        model,
        f"{model.model_id} could not be fetched from the Hub ({type(error).__name__}: "
        f"{text[0][:300] if text else ''}). Fix: check the name in MODELS, HF_TOKEN for a gated "
        "or private repo, and the network",
    )


def weights_of(
    model: ServedModel,
    settings: LlamaCppSettings,
    report: Callable[[str], None],
    cache: Path = GGUF_CACHE,
) -> Weights:
    """What serves `model`: its GGUF file, made when needed."""
    source = source_of(model.model_id)
    if source.kind == "gguf" and source.local is not None:
        if not source.local.is_file():
            raise ModelProblem(
                model,
                f"{model.model_id} is not there. Fix: put the file in LOCAL_MODELS_DIR "
                f"(default ./weights), which the container sees as {LOCAL_MODELS_DIR}",
            )
        return Weights(source.local)
    if source.kind == "gguf":
        try:
            file = source.file
            if not file:
                file = pick_quant_file(hub_listing(source.repo), source.quant) or ""
                if not file:
                    raise ModelProblem(
                        model,
                        f"{source.repo} has no GGUF file named like {source.quant}. Fix: name "
                        "one of its files (org/repo/<file>.gguf)",
                    )
            report(f"downloading {file} from the Hub")
            return Weights(hub_download(source.repo, None, file))
        except ModelProblem:
            raise
        except Exception as e:  # the Hub's errors, the network's, the disk's
            raise hub_problem(model, e) from e
    if source.local is not None:
        folder = source.local
        if not (folder / "config.json").is_file():
            raise ModelProblem(
                model,
                f"{model.model_id} is not a Hugging Face checkpoint (no config.json there). Fix: "
                "put the model's folder in LOCAL_MODELS_DIR (default ./weights)",
            )
        key = local_checkpoint_key(folder)
    else:
        report("downloading the checkpoint from the Hub")
        try:
            folder = hub_download(source.repo, CHECKPOINT_FILES)
        except Exception as e:
            raise hub_problem(model, e) from e
        key = folder.name[:12]  # the snapshot's commit
    out = converted_path(model.model_id, key, settings.llamacpp_quant, cache)
    if out.is_file():
        logger.info("%s: %s, converted earlier", model.endpoint, out)
    else:
        check_disk(model, folder, settings, cache)
        convert(model, folder, out, settings, report)
        logger.info("%s: converted to %s (%.2f GB)", model.endpoint, out, out.stat().st_size / 1e9)
    return Weights(out, folder, read_config(folder))
