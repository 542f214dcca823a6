"""`docker compose config` for every profile: what runs, what is published, what is shared.

Needs only the compose CLI (no engine). The GPU engines cannot run here (no GPU, no registry),
so their profiles are checked through their configuration; their route is tested in
tests/integration/test_openai_compatible_route.py with a real OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from constants import REPO

PROFILES = {"pyfunc": "pyfunc", "tgi": "tgi", "vllm": "vllm"}


def compose_config(profile: str, *files: str, env: dict | None = None, tmp_path=None) -> dict:
    empty_env = (tmp_path or Path("/tmp")) / "empty.env"
    empty_env.write_text("")  # the stack must start without a .env
    args = ["docker", "compose", "--env-file", str(empty_env)]
    for f in files or ("docker-compose.yml",):
        args += ["-f", str(REPO / f)]
    out = subprocess.run([*args, "--profile", profile, "config", "--format", "json"], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={"PATH": __import__("os").environ["PATH"], "HOME": str(Path.home()), **(env or {})})
    return json.loads(out.stdout)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_runs_tracking_gateway_and_its_engine(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    assert set(services) == {"tracking", "gateway", profile}


@pytest.mark.parametrize("profile", PROFILES)
def test_only_the_tracking_ui_is_published_and_on_loopback(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert list(published) == ["tracking"]
    (port,) = published["tracking"]
    assert port["host_ip"] == "127.0.0.1" and port["published"] == "5000" and port["target"] == 5000


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_a_healthcheck_restart_policy_and_healthy_dependencies(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    for name, s in services.items():
        assert s["healthcheck"]["test"], name
        assert s["restart"] == "unless-stopped", name
    assert services["tracking"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    engine_dep = services["gateway"]["depends_on"][profile]
    assert engine_dep["condition"] == "service_healthy"
    assert services["tracking"]["environment"]["MLFLOW_DEPLOYMENTS_TARGET"] == "http://gateway:7000"


@pytest.mark.parametrize("profile", PROFILES)
def test_engine_uses_the_shared_hf_cache_and_read_only_models(profile, tmp_path):
    engine = compose_config(profile, tmp_path=tmp_path)["services"][profile]
    mounts = {v["target"]: v for v in engine["volumes"]}
    assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] == "hf-cache"
    assert mounts["/models"]["read_only"] is True
    assert mounts["/models"]["source"] == str(REPO / "models")


@pytest.mark.parametrize("profile", ["tgi", "vllm"])
def test_gpu_engines_reserve_nvidia_gpus_and_take_the_knobs(profile, tmp_path):
    engine = compose_config(profile, env={"GPU_COUNT": "2", "MODEL_ID": "/models/my-llm",
                                          "MAX_TOTAL_TOKENS": "2048"}, tmp_path=tmp_path)["services"][profile]
    (device,) = engine["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 2 and device["capabilities"] == ["gpu"]
    command = " ".join(engine["command"])
    assert "/models/my-llm" in command and "2048" in command
    assert "ports" not in engine


def test_tgi_follows_the_articles_docker_run(tmp_path):
    tgi = compose_config("tgi", tmp_path=tmp_path)["services"]["tgi"]
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:3.3.")
    assert str(tgi["shm_size"]) == str(1024**3)  # --shm-size 1g
    assert "--model-id=llm-jp/llm-jp-3-3.7b-instruct" in tgi["command"]
    assert any("/health" in part for part in tgi["healthcheck"]["test"])


def test_vllm_serves_the_model_under_the_name_the_gateway_asks_for(tmp_path):
    vllm = compose_config("vllm", env={"MODEL_ID": "org/m"}, tmp_path=tmp_path)["services"]["vllm"]
    assert "--served-model-name=org/m" in vllm["command"]
    vllm = compose_config("vllm", env={"SERVED_MODEL_NAME": "m"}, tmp_path=tmp_path)["services"]["vllm"]
    assert "--served-model-name=m" in vllm["command"]


def test_pyfunc_gpu_switch_is_opt_in(tmp_path):
    plain = compose_config("pyfunc", tmp_path=tmp_path)["services"]["pyfunc"]
    assert "deploy" not in plain or not plain["deploy"].get("resources")
    gpu = compose_config("pyfunc", "docker-compose.yml", "docker-compose.gpu.yml",
                         tmp_path=tmp_path)["services"]["pyfunc"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and gpu["environment"]["DEVICE"] == "cuda"


def test_images_build_from_the_base_image_knob(tmp_path):
    services = compose_config("pyfunc", env={"BASE_IMAGE": "debian-py:local"}, tmp_path=tmp_path)["services"]
    for name in ("tracking", "gateway", "pyfunc"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "debian-py:local"
    for folder in SERVICE_FOLDERS.values():
        text = (REPO / folder / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text, folder
        assert "USER app" in text, f"{folder}/Dockerfile must not run as root"


# The layout rule (README, "Layout"): a service is one folder with its Dockerfile, pinned
# requirements.txt, pyproject.toml and package, whose `start` module is the container's command.
SERVICE_FOLDERS = {"pyfunc": "model", "gateway": "gateway", "tracking": "services/tracking"}


@pytest.mark.parametrize("service", SERVICE_FOLDERS)
def test_each_service_is_one_folder_built_and_started_the_same_way(service, tmp_path):
    folder = REPO / SERVICE_FOLDERS[service]
    build = compose_config("pyfunc", tmp_path=tmp_path)["services"][service]["build"]
    assert build["dockerfile"] == f"{SERVICE_FOLDERS[service]}/Dockerfile"
    (package,) = [p.parent.name for p in folder.glob("*/start.py")]
    assert (folder / "requirements.txt").is_file() and (folder / "pyproject.toml").is_file()
    dockerfile = (folder / "Dockerfile").read_text()
    assert f"COPY {SERVICE_FOLDERS[service]}/requirements.txt" in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "promptlab_stack.run_and_drain"]' in dockerfile
    assert f'CMD ["python", "-m", "{package}.start"]' in dockerfile


def test_every_knob_in_the_compose_files_is_documented_in_env_example():
    used = set()
    for f in ("docker-compose.yml", "docker-compose.gpu.yml"):
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", (REPO / f).read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert used - documented == set(), "add these to .env.example with a comment"
    assert documented - used == set(), "these .env.example knobs are not used"


def test_secrets_stay_out_of_git_and_build_contexts():
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in gitignore and ".env" in dockerignore
    assert "*" in dockerignore, "build contexts must be an allow-list"


def test_secrets_are_never_build_arguments(tmp_path):
    services = compose_config("pyfunc", env={"HF_TOKEN": "hf_x", "OPENAI_API_KEY": "sk_x"},
                              tmp_path=tmp_path)["services"]
    for name in ("tracking", "gateway", "pyfunc"):
        args = services[name]["build"].get("args", {})
        assert set(args) <= {"BASE_IMAGE", "TORCH_INDEX_URL"}, args
        assert "hf_x" not in json.dumps(services[name]["build"])
