"""Before the model server starts: can each model be fetched and loaded at all?

Errors that waiting cannot fix are found here, in seconds, before any weight is downloaded or
loaded, and each becomes a `ModelProblem` whose message names the cause and the fix: a missing
or unreadable folder, a Hub repo that does not exist, a gated repo without (or with a rejected)
token, no way to reach the Hub for a model that is not in the cache, weights larger than the
memory available, an architecture transformers cannot load as a causal LM. start.py then stops
the container with that message (no crash loop); the rest of the stack keeps running.

What this returns, per model, is a `ModelPlan`: where its files are (a folder, or a Hub repo and
the files to download) and their size, which the model server then fetches in the background.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from promptlab_stack.memory import available_memory_bytes
from promptlab_stack.topology import LEGACY_LOCAL_MODELS_DIR, LOCAL_MODELS_DIR
from pyfunc_server.settings import ModelServerSettings

logger = logging.getLogger(__name__)

GB = 1e9
# Files a causal LM needs besides its weights (config, tokenizer, generation config, ...).
SUPPORT_PATTERNS = ("*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja")
HUB_ATTEMPTS, HUB_RETRY_S = 3, 5.0  # unreachable Hub: ~15 s of retries before giving up


STARTUP_ARTIFACT = "startup"  # the pyfunc artifact start.py hands to load_context


@dataclass
class Startup:
    """What start.py hands the model server: the plans, and where to write the state file."""

    plans: list[ModelPlan]
    state_path: Path | None


def write_startup(path: Path, plans: list[ModelPlan], state_path: Path | None) -> Path:
    data = {
        "state_path": str(state_path) if state_path else None,
        "plans": [{**p.__dict__, "folder": str(p.folder) if p.folder else None} for p in plans],
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def read_startup(path: str | None) -> Startup | None:
    if not path:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    plans = [
        ModelPlan(**{**p, "folder": Path(p["folder"]) if p["folder"] else None})
        for p in data["plans"]
    ]
    return Startup(plans, Path(data["state_path"]) if data["state_path"] else None)


class ModelProblem(Exception):
    """An error waiting cannot fix; str() is the whole message (cause, then "Fix: ...")."""

    def __init__(self, model: str, cause: str, fix: str):
        self.model, self.cause, self.fix = model, cause, fix
        super().__init__(f"{model}: {cause}. Fix: {fix}")


@dataclass
class ModelPlan:
    endpoint: str
    model_id: str
    folder: Path | None = None  # the files are here (a local folder or the HF cache)
    files: list[str] = field(default_factory=list)  # to download from the Hub, else empty
    download_bytes: int = 0
    memory_bytes: int | None = None  # estimated size once loaded


def check(settings: ModelServerSettings, token: str | None = None) -> list[ModelPlan]:
    """A plan per served model, or the first ModelProblem."""
    limit = memory_limit_bytes(settings)
    cuda = device_is_cuda(settings.device)
    # Local folders first: their problems are found in milliseconds, before any Hub call.
    local = dict.fromkeys(m.model_id for m in settings.served_models if m.model_id.startswith("/"))
    folders = {
        model_id: check_folder(str(local_folder(model_id)), shown=model_id) for model_id in local
    }
    plans = []
    for m in settings.served_models:
        plan = ModelPlan(m.endpoint, m.model_id)
        if m.model_id in folders:
            plan.folder = folders[m.model_id]
        elif Path(m.model_id).is_dir():
            plan.folder = check_folder(m.model_id)
        elif (cached := cached_snapshot(m.model_id)) is not None:
            plan.folder = check_folder(str(cached), shown=m.model_id)
        if plan.folder is not None:
            config = read_config(plan.folder / "config.json", m.model_id)
            size = sum(f.stat().st_size for f in weight_files(plan.folder))
        else:
            plan.files, sizes, config = hub_plan(m.model_id, token)
            plan.download_bytes = sum(sizes.values())
            size = sum(v for k, v in sizes.items() if is_weight(k))
        check_architecture(config, m.model_id)
        plan.memory_bytes = loaded_size(size, config, cuda)
        if plan.memory_bytes > limit:
            raise ModelProblem(
                m.model_id,
                f"its weights need about {plan.memory_bytes / GB:.1f} GB of memory once loaded "
                f"({'bf16 on the GPU' if cuda else 'float32 on the CPU'}), "
                f"but only {limit / GB:.1f} GB are available to the model server",
                "give the container more memory (Docker Desktop: Settings > Resources), "
                "use a smaller model, a GPU, or set MODEL_MEMORY_BUDGET_GB if the limit detected "
                "is wrong",
            )
        plans.append(plan)
    return plans


# -- local folders --------------------------------------------------------------------------
def local_folder(
    model_id: str, models_dir: Path = LOCAL_MODELS_DIR, legacy_dir: Path = LEGACY_LOCAL_MODELS_DIR
) -> Path:
    """Where a local model's files are: `model_id` itself, unless it names a folder of
    `models_dir` (the host's LOCAL_MODELS_DIR, default ./weights) that is not there but is in
    `legacy_dir` (the host's ./models, the old default): then that one, said once in the log."""
    path = Path(model_id)
    try:
        relative = path.relative_to(models_dir)
    except ValueError:
        return path
    legacy = legacy_dir / relative
    if relative.parts and not path.exists() and legacy.exists():
        logger.warning("%s: read from ./models, the old folder; move it to ./weights", legacy)
        return legacy
    return path


def host_folder(
    folder: Path, models_dir: Path = LOCAL_MODELS_DIR, legacy_dir: Path = LEGACY_LOCAL_MODELS_DIR
) -> str:
    """`folder` (a path in the model container) as the person on the host finds it."""
    if folder.is_relative_to(models_dir) and folder != models_dir:
        relative = folder.relative_to(models_dir)
        return f"$LOCAL_MODELS_DIR/{relative} (default ./weights/{relative})"
    if folder.is_relative_to(legacy_dir) and folder != legacy_dir:
        return f"./models/{folder.relative_to(legacy_dir)}"
    return str(folder)


def check_folder(path: str, shown: str | None = None) -> Path:
    folder = Path(path)
    shown = shown or path
    if not folder.is_dir():
        raise ModelProblem(
            shown,
            f"no such folder {path} in the model container",
            "put the model under LOCAL_MODELS_DIR on the host (default ./weights) and "
            f"name it {LOCAL_MODELS_DIR}/<folder>, or use a Hugging Face repo id",
        )
    me = os.getuid()
    for p in [folder, *sorted(folder.rglob("*"))]:
        if p.name.startswith(".") and p.parent != folder:
            continue
        need = os.R_OK | (os.X_OK if p.is_dir() else 0)
        if not os.access(p, need):
            st = p.stat()
            owner = _user(st.st_uid)
            kind = "folder" if p.is_dir() else "file"
            raise ModelProblem(
                shown,
                f"cannot read the {kind} {p}: it belongs to uid {st.st_uid}{owner} with mode "
                f"{stat.S_IMODE(st.st_mode):04o}, and the model server runs as uid {me}",
                "on the host, make the model folder readable by everyone: chmod -R a+rX "
                + host_folder(folder),
            )
    if not (folder / "config.json").is_file():
        raise ModelProblem(
            shown,
            f"{path} has no config.json, so it is not a saved model folder",
            "save the model with save_pretrained() (config, tokenizer and weights), "
            "or point MODELS/MODEL_ID at the folder that holds config.json",
        )
    if not weight_files(folder):
        raise ModelProblem(
            shown,
            f"{path} has no weights (*.safetensors or pytorch_model*.bin)",
            "copy the weight files into the folder",
        )
    return folder


def _user(uid: int) -> str:
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""


def is_weight(name: str) -> bool:
    return name.endswith(".safetensors") or (
        name.startswith("pytorch_model") and name.endswith(".bin")
    )


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def snapshot_folder(repo_id: str) -> Path | None:
    """The repo's snapshot folder in the HF cache (HF_HOME), if there is one."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def cached_snapshot(repo_id: str) -> Path | None:
    """The repo's complete snapshot in the HF cache: weights and config.json are there."""
    folder = snapshot_folder(repo_id)
    return (
        folder if folder and weight_files(folder) and (folder / "config.json").is_file() else None
    )


# -- the Hub --------------------------------------------------------------------------------
def hub_plan(repo_id: str, token: str | None) -> tuple[list[str], dict[str, int], dict]:
    """(files to download, their sizes, the model's config) from the Hub, or a ModelProblem."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    api = HfApi(token=token or None)
    page = f"{api.endpoint}/{repo_id}"
    error: Exception  # the last attempt's, when every attempt failed
    for attempt in range(1, HUB_ATTEMPTS + 1):
        try:
            info = api.model_info(repo_id, files_metadata=True)
            config_path = hf_hub_download(repo_id, "config.json", token=token or None)
            break
        except GatedRepoError as e:
            if token:
                raise ModelProblem(
                    repo_id,
                    f"{repo_id} is gated and the account of HF_TOKEN has no access "
                    f"to it ({_first_line(e)})",
                    f"accept its conditions at {page} with that account, or use its token",
                ) from e
            raise ModelProblem(
                repo_id,
                f"{repo_id} is gated: the Hub wants a logged-in user who accepted its conditions",
                f"accept them at {page}, then set HF_TOKEN=hf_... in .env "
                "(a read token from https://huggingface.co/settings/tokens)",
            ) from e
        except RepositoryNotFoundError as e:
            raise ModelProblem(
                repo_id,
                f"the Hub has no model {repo_id}"
                + (" that HF_TOKEN can see" if token else " (or it is private)"),
                f"check the name at {page}"
                + ("" if token else "; a private repo needs HF_TOKEN in .env"),
            ) from e
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status in (401, 403):
                raise ModelProblem(
                    repo_id,
                    f"the Hub rejected HF_TOKEN ({status}: {_first_line(e)})",
                    "set a valid read token in .env (https://huggingface.co/settings/tokens), "
                    "or remove HF_TOKEN for public models",
                ) from e
            if status is not None and status < 500:
                raise ModelProblem(
                    repo_id,
                    f"the Hub answered {status}: {_first_line(e)}",
                    f"check the model name at {page}",
                ) from e
            error = e
        except Exception as e:  # connection refused, DNS, timeout, offline mode
            error = e
        if attempt < HUB_ATTEMPTS:
            time.sleep(HUB_RETRY_S)
    else:
        raise ModelProblem(
            repo_id,
            f"{repo_id} is not in the model cache (the hf-cache volume) and the Hub "
            f"at {api.endpoint} cannot be reached ({type(error).__name__}: {_first_line(error)})",
            "connect this machine to the Internet (or set HF_ENDPOINT to a mirror), or copy "
            f"the model into ./weights and set MODEL_ID={LOCAL_MODELS_DIR}/<folder>",
        ) from error
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    weights = [n for n in sizes if n.endswith(".safetensors") and "/" not in n] or [
        n for n in sizes if is_weight(n) and "/" not in n
    ]
    if not weights:
        raise ModelProblem(
            repo_id,
            f"{repo_id} has no weights in a format transformers loads here "
            "(*.safetensors or pytorch_model*.bin at the top of the repo)",
            "pick a repo with transformers weights (not GGUF/ONNX-only)",
        )
    from fnmatch import fnmatch

    support = [n for n in sizes if "/" not in n and any(fnmatch(n, p) for p in SUPPORT_PATTERNS)]
    files = sorted(set(weights) | set(support))
    return files, {n: sizes[n] for n in files}, read_config(Path(config_path), repo_id)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# -- architecture and size ------------------------------------------------------------------
def read_config(path: Path, shown: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelProblem(
            shown, f"its config.json cannot be read ({e})", "re-save or re-download the model"
        ) from e


def check_architecture(config: dict, shown: str) -> None:
    """transformers can build this model as a causal LM, without running the repo's own code."""
    from transformers import CONFIG_MAPPING, __version__
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    architectures = ", ".join(config.get("architectures") or []) or "none named"
    if model_type not in CONFIG_MAPPING:
        fix = (
            "this model needs its own code (auto_map), which the stack does not run: pick a model "
            "transformers supports natively"
            if config.get("auto_map")
            else "use a newer transformers in model/requirements.txt if one supports it, "
            "or another model"
        )
        raise ModelProblem(
            shown,
            f"transformers {__version__} does not know the model type "
            f"{model_type!r} (architectures: {architectures})",
            fix,
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelProblem(
            shown,
            f"model type {model_type!r} ({architectures}) is not a causal language "
            "model transformers can generate text with",
            "pick a text-generation (causal LM) model",
        )


def loaded_size(file_bytes: int, config: dict, cuda: bool) -> int:
    """The weights once loaded: bf16 on a GPU, float32 on a CPU (generator.py)."""
    saved = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    half = saved in ("bfloat16", "float16")
    if half and not cuda:
        return file_bytes * 2
    if not half and cuda:
        return file_bytes // 2
    return file_bytes


def device_is_cuda(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def memory_limit_bytes(settings: ModelServerSettings) -> int:
    """What one model may take: MODEL_MEMORY_BUDGET_GB when set, else all the container's memory
    (the budget's 80% default leaves room for other models, not a limit for one)."""
    if settings.model_memory_budget_gb > 0:
        return settings.memory_budget_bytes
    if device_is_cuda(settings.device):
        import torch

        return torch.cuda.get_device_properties(0).total_memory
    return available_memory_bytes()
