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
from hypothesis import given, settings
from hypothesis import strategies as st

PROFILES = {
    "pyfunc": "pyfunc",
    "llamacpp": "llamacpp",
    "tgi": "tgi",
    "vllm": "vllm",
    "sglang": "sglang",
}
# Our own engines: their healthcheck is a module of theirs, which says what the models are doing.
OUR_ENGINES = ("pyfunc", "llamacpp")
GPU_ENGINES = ["tgi", "vllm", "sglang"]


def compose_config(profile: str, *files: str, env: dict | None = None, tmp_path=None) -> dict:
    empty_env = (tmp_path or Path("/tmp")) / "empty.env"
    empty_env.write_text("")  # the stack must start without a .env
    args = ["docker", "compose", "--env-file", str(empty_env)]
    for f in files or ("docker-compose.yml",):
        args += ["-f", str(REPO / f)]
    out = subprocess.run(
        [*args, "--profile", profile, "config", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": __import__("os").environ["PATH"], "HOME": str(Path.home()), **(env or {})},
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_runs_tracking_gateway_and_its_engine(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    assert set(services) == {"tracking", "gateway", "db-upgrade", "endpoint-sync", profile}


@pytest.mark.parametrize("profile", PROFILES)
def test_only_the_tracking_ui_is_published_and_on_loopback(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert list(published) == ["tracking"]
    (port,) = published["tracking"]
    assert port["host_ip"] == "127.0.0.1" and port["published"] == "5000" and port["target"] == 5000


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_a_healthcheck_and_restart_policy_and_the_ui_never_waits_for_a_model(
    profile, tmp_path
):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    for name, s in services.items():
        if name == "db-upgrade":  # one-shot: it runs to completion before the tracking server
            assert s["restart"] == "no"
            continue
        assert s["healthcheck"]["test"], name
        # Our services stop with 0 on a problem waiting cannot fix, so a crash restarts them but a
        # bad setting does not loop (promptlab_stack/stop.py); the engines' own images restart
        # always.
        ours = "build" in s or s["image"].startswith("mlflow-promptlab/")
        assert s["restart"] == ("on-failure" if ours else "unless-stopped"), name
    assert services["tracking"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    # The gateway, and so the UI, comes up whatever the engine does.
    assert "depends_on" not in services["gateway"]
    assert services["tracking"]["environment"]["MLFLOW_DEPLOYMENTS_TARGET"] == "http://gateway:7000"


@pytest.mark.parametrize("profile", PROFILES)
def test_engine_uses_the_shared_hf_cache_and_read_only_models(profile, tmp_path):
    engine = compose_config(profile, tmp_path=tmp_path)["services"][profile]
    mounts = {v["target"]: v for v in engine["volumes"]}
    assert mounts["/data"]["type"] == "volume" and mounts["/data"]["source"] == "hf-cache"
    assert mounts["/models"]["read_only"] is True
    assert mounts["/models"]["source"] == str(REPO / "weights")
    # The old default folder is still read (promptlab_stack.topology.LEGACY_LOCAL_MODELS_DIR).
    assert mounts["/models-legacy"]["read_only"] is True
    assert mounts["/models-legacy"]["source"] == str(REPO / "models")


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_wires_the_services_as_the_topology_says(profile, tmp_path):
    from promptlab_stack import topology

    services = compose_config(profile, tmp_path=tmp_path)["services"]
    assert services["tracking"]["environment"]["MLFLOW_DEPLOYMENTS_TARGET"] == topology.GATEWAY.url
    assert services["tracking"]["ports"][0]["target"] == topology.TRACKING.port
    for name in ("tracking", "gateway", profile):
        test = " ".join(services[name]["healthcheck"]["test"])
        service = next(
            s for s in (topology.TRACKING, topology.GATEWAY, *topology.ENGINES) if s.name == name
        )
        assert name in OUR_ENGINES or f":{service.port}/" in test, (name, test)
    mounts = {v["target"] for v in services[profile]["volumes"]}
    assert {
        str(topology.HF_HOME),
        str(topology.LOCAL_MODELS_DIR),
        str(topology.LEGACY_LOCAL_MODELS_DIR),
    } <= mounts


def engine_start(engine: dict, env: dict | None = None) -> str:
    """The engine container's start line as its shell runs it, with FIRST_MODEL_SH evaluated and
    the engine's own program replaced by `echo` (the engine images cannot run here)."""
    unescape = lambda s: s.replace("$$", "$")  # noqa: E731 - `compose config` writes $ as $$
    environment = {k: unescape(str(v)) for k, v in engine["environment"].items()}
    script = unescape(engine["command"][0]).replace("exec ", "exec echo ", 1)
    assert engine["entrypoint"] == ["/bin/sh", "-c"]
    out = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", **environment, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("profile", GPU_ENGINES)
def test_gpu_engines_reserve_nvidia_gpus_and_take_the_knobs(profile, tmp_path):
    engine = compose_config(
        profile,
        env={"GPU_COUNT": "2", "MODEL_ID": "/models/my-llm", "MAX_TOTAL_TOKENS": "2048"},
        tmp_path=tmp_path,
    )["services"][profile]
    (device,) = engine["deploy"]["resources"]["reservations"]["devices"]
    assert (
        device["driver"] == "nvidia" and device["count"] == 2 and device["capabilities"] == ["gpu"]
    )
    start = engine_start(engine)
    assert "/models/my-llm" in start and "2048" in start
    assert "ports" not in engine


@pytest.mark.parametrize("profile", GPU_ENGINES)
def test_gpu_engines_keep_only_the_capabilities_root_needs_and_their_own_ipc(profile, tmp_path):
    """Config only: the engines' images need a GPU, which this machine has not (their start
    with these settings is not run here)."""
    engine = compose_config(profile, tmp_path=tmp_path)["services"][profile]
    assert engine["cap_drop"] == ["ALL"]
    assert set(engine["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}
    assert engine["security_opt"] == ["no-new-privileges:true"]
    assert "ipc" not in engine and int(engine["shm_size"]) >= 2**30


def test_postgres_keeps_only_the_capabilities_its_start_needs(tmp_path):
    postgres = compose_config("postgres", tmp_path=tmp_path)["services"]["postgres"]
    assert postgres["cap_drop"] == ["ALL"]
    assert set(postgres["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"}
    assert postgres["security_opt"] == ["no-new-privileges:true"]


def test_the_tls_proxy_buffers_bodies_in_a_bounded_tmpfs_within_a_memory_limit(tmp_path):
    tls = compose_config("tls", tmp_path=tmp_path)["services"]["tls"]
    assert "/tmp:size=256m" in tls["tmpfs"] and int(tls["mem_limit"]) == 512 * 2**20


@pytest.mark.parametrize(
    "profile, program",
    [
        ("tgi", "text-generation-launcher --model-id "),
        ("vllm", "vllm serve "),
        ("sglang", "python3 -m sglang.launch_server --model-path "),
    ],
)
def test_gpu_engines_serve_the_first_model_of_the_list(profile, program, tmp_path):
    env = {"MODELS": " small=/models/tiny-ja , org/other", "MODEL_ID": "org/ignored"}
    engine = compose_config(profile, env=env, tmp_path=tmp_path)["services"][profile]
    assert engine_start(engine).startswith(f"{program}/models/tiny-ja ")
    default = compose_config(profile, tmp_path=tmp_path)["services"][profile]
    assert engine_start(default).startswith(f"{program}llm-jp/llm-jp-3-3.7b-instruct ")


ENTRY = st.from_regex(
    r"([a-z][a-z0-9.-]{0,8}=)?(/models/|[a-z]{1,6}/)?[a-z][a-z0-9._-]{0,10}", fullmatch=True
)


@settings(max_examples=40, deadline=None)
@given(st.lists(ENTRY, min_size=1, max_size=3), st.sampled_from(["", " "]))
def test_the_engines_shell_picks_the_model_parse_models_does(entries, space):
    """The GPU engines' FIRST_MODEL_SH mirrors promptlab_stack.settings.parse_models."""
    from promptlab_stack.settings import parse_models

    models = ",".join(f"{space}{e}{space}" for e in entries)
    try:
        expected = parse_models(models)[0].model_id
    except ValueError:
        return  # a list the gateway and model server refuse at start
    script = re.search(
        r"FIRST_MODEL_SH: >-\n((?:    .*\n)+)", (REPO / "docker-compose.yml").read_text()
    ).group(1)
    script = " ".join(line.strip() for line in script.splitlines()).replace("$$", "$")
    out = subprocess.run(
        ["sh", "-c", f'{script}; printf %s "$m"'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MODELS": models, "MODEL_ID": "org/default"},
    )
    assert out.stdout == expected


def test_tgi_follows_the_articles_docker_run(tmp_path):
    tgi = compose_config("tgi", tmp_path=tmp_path)["services"]["tgi"]
    # TGI's repository is archived; 3.3.7 is its last release.
    assert tgi["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.7"
    assert str(tgi["shm_size"]) == str(1024**3)  # --shm-size 1g
    assert any("/health" in part for part in tgi["healthcheck"]["test"])


def test_engines_are_pinned(tmp_path):
    images = {p: compose_config(p, tmp_path=tmp_path)["services"][p]["image"] for p in GPU_ENGINES}
    assert (
        images["vllm"] == "vllm/vllm-openai:v0.33.0"
        and images["sglang"] == "lmsysorg/sglang:v0.5.23"
    )


def test_the_gateway_reaches_engines_on_the_host(tmp_path):
    gateway = compose_config("pyfunc", tmp_path=tmp_path)["services"]["gateway"]
    assert gateway["extra_hosts"] in (
        ["host.docker.internal=host-gateway"],
        ["host.docker.internal:host-gateway"],
        {"host.docker.internal": "host-gateway"},
        {"host.docker.internal": ["host-gateway"]},
    )


def test_only_the_gateway_reads_the_endpoint_keys_file_and_the_stack_starts_without_it(tmp_path):
    services = compose_config("pyfunc", tmp_path=tmp_path)["services"]
    assert all("TEAM_KEY" not in s.get("environment", {}) for s in services.values())
    # The file sits beside docker-compose.yml (a copy here, with the file beside it).
    (tmp_path / "docker-compose.yml").write_text((REPO / "docker-compose.yml").read_text())
    (tmp_path / "gateway-keys.env").write_text("TEAM_KEY=team-secret\n")
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    out = subprocess.run(
        [
            "docker",
            "compose",
            "--env-file",
            str(empty_env),
            "-f",
            str(tmp_path / "docker-compose.yml"),
        ]
        + ["--profile", "pyfunc", "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": __import__("os").environ["PATH"], "HOME": str(Path.home())},
    )
    services = json.loads(out.stdout)["services"]
    assert services["gateway"]["environment"]["TEAM_KEY"] == "team-secret"
    assert [n for n, s in services.items() if "TEAM_KEY" in s.get("environment", {})] == ["gateway"]


def test_pyfunc_gpu_switch_is_opt_in(tmp_path):
    plain = compose_config("pyfunc", tmp_path=tmp_path)["services"]["pyfunc"]
    assert "deploy" not in plain or not plain["deploy"].get("resources")
    gpu = compose_config(
        "pyfunc", "docker-compose.yml", "docker-compose.gpu.yml", tmp_path=tmp_path
    )["services"]["pyfunc"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and gpu["environment"]["DEVICE"] == "cuda"


def test_images_build_from_the_base_image_knob(tmp_path):
    services = compose_config("pyfunc", env={"BASE_IMAGE": "debian-py:local"}, tmp_path=tmp_path)[
        "services"
    ]
    for name in ("tracking", "gateway", "pyfunc"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "debian-py:local"
    for folder in SERVICE_FOLDERS.values():
        text = (REPO / folder / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text, folder
        assert "USER app" in text, f"{folder}/Dockerfile must not run as root"


# The layout rule (README, "Layout"): a service is one folder with its Dockerfile, pinned
# requirements.txt, pyproject.toml and package, whose `start` module is the container's command.
SERVICE_FOLDERS = {
    "pyfunc": "model",
    "llamacpp": "services/llamacpp",
    "gateway": "gateway",
    "tracking": "services/tracking",
    "tls": "services/tls",
}


@pytest.mark.parametrize("service", SERVICE_FOLDERS)
def test_each_service_is_one_folder_built_and_started_the_same_way(service, tmp_path):
    folder = REPO / SERVICE_FOLDERS[service]
    profile = service if service in ("tls", "llamacpp") else "pyfunc"
    build = compose_config(profile, tmp_path=tmp_path)["services"][service]["build"]
    assert build["dockerfile"] == f"{SERVICE_FOLDERS[service]}/Dockerfile"
    (package,) = [p.parent.name for p in folder.glob("*/start.py")]
    assert (folder / "requirements.txt").is_file() and (folder / "pyproject.toml").is_file()
    dockerfile = (folder / "Dockerfile").read_text()
    assert f"COPY {SERVICE_FOLDERS[service]}/requirements.txt" in dockerfile
    if service != "tls":  # nginx drains by itself on SIGQUIT (its stop_signal)
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
    assert "gateway-keys.env" in gitignore
    assert "*" in dockerignore, "build contexts must be an allow-list"


def test_secrets_are_never_build_arguments(tmp_path):
    services = compose_config(
        "pyfunc", env={"HF_TOKEN": "hf_x", "OPENAI_API_KEY": "sk_x"}, tmp_path=tmp_path
    )["services"]
    for name in ("tracking", "gateway", "pyfunc"):
        args = services[name]["build"].get("args", {})
        assert set(args) <= {"BASE_IMAGE", "TORCH_INDEX_URL"}, args
        assert "hf_x" not in json.dumps(services[name]["build"])


@pytest.mark.parametrize("profile", PROFILES)
def test_our_services_are_locked_down_and_every_log_is_rotated(profile, tmp_path):
    services = compose_config(profile, tmp_path=tmp_path)["services"]
    for name, s in services.items():
        assert s["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3"},
        }, name
        if name in ("tracking", "gateway", *OUR_ENGINES):
            assert s["cap_drop"] == ["ALL"] and s["security_opt"] == ["no-new-privileges:true"], (
                name
            )
            assert s["read_only"] is True and set(s["tmpfs"]) == {
                "/tmp",
                "/home/app:uid=1000,gid=1000",
            }, name
            assert s["pids_limit"] == 1024, name


def test_the_schema_is_upgraded_by_a_one_shot_service_before_the_tracking_server_starts(tmp_path):
    services = compose_config("pyfunc", tmp_path=tmp_path)["services"]
    one_shot, tracking = services["db-upgrade"], services["tracking"]
    assert tracking["depends_on"]["db-upgrade"]["condition"] == "service_completed_successfully"
    assert one_shot["image"] == tracking["image"] and one_shot["command"] == [
        "promptlab-db-upgrade"
    ]
    assert one_shot["restart"] == "no" and "ports" not in one_shot
    assert {v["target"]: v["source"] for v in one_shot["volumes"]} == {"/mlflow/db": "mlflow-db"}
    for knob in (
        "BACKEND_STORE_URI",
        "ARTIFACTS_DESTINATION",
        "PGPASSWORD",
        "MLFLOW_S3_ENDPOINT_URL",
    ):
        assert one_shot["environment"][knob] == tracking["environment"][knob], knob


def test_the_postgres_profile_adds_a_healthy_postgresql_with_credentials_from_env(tmp_path):
    env = {
        "POSTGRES_PASSWORD": "from-dotenv",
        "BACKEND_STORE_URI": "postgresql://mlflow@postgres:5432/mlflow",
    }
    services = compose_config("postgres", env=env, tmp_path=tmp_path)["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:17-bookworm" and "pg_isready" in " ".join(
        postgres["healthcheck"]["test"]
    )
    assert postgres["environment"] == {
        "POSTGRES_USER": "mlflow",
        "POSTGRES_DB": "mlflow",
        "POSTGRES_PASSWORD": "from-dotenv",
    }
    assert {v["target"]: v["source"] for v in postgres["volumes"]} == {
        "/var/lib/postgresql/data": "postgres-data"
    }
    assert "ports" not in postgres
    assert services["db-upgrade"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The password reaches the tracking server as libpq's PGPASSWORD, never inside the URI.
    tracking = services["tracking"]["environment"]
    assert (
        tracking["PGPASSWORD"] == "from-dotenv"
        and "from-dotenv" not in tracking["BACKEND_STORE_URI"]
    )
    # No password in the compose file itself: without .env the official image refuses to start.
    assert (
        compose_config("postgres", tmp_path=tmp_path)["services"]["postgres"]["environment"][
            "POSTGRES_PASSWORD"
        ]
        == ""
    )


def test_s3_artifacts_are_configured_through_the_tracking_server(tmp_path):
    """The S3 path is checked here, by configuration; no S3-compatible server can run on this
    machine (tests/integration/test_team_setup.py names the skip)."""
    env = {
        "ARTIFACTS_DESTINATION": "s3://team-bucket/mlflow",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    tracking = compose_config("pyfunc", env=env, tmp_path=tmp_path)["services"]["tracking"][
        "environment"
    ]
    assert {k: tracking[k] for k in env} == env
    assert "build" not in json.dumps(env)
    requirements = (REPO / "services/tracking/requirements.txt").read_text()
    assert "boto3==" in requirements and "psycopg[binary]==" in requirements


def test_the_tls_profile_puts_https_on_loopback_in_front_of_the_ui(tmp_path):
    services = compose_config("tls", tmp_path=tmp_path)["services"]
    tls = services["tls"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in tls["ports"]] == [
        ("127.0.0.1", "8443", 8443)
    ]
    assert tls["depends_on"]["tracking"]["condition"] == "service_healthy"
    assert tls["stop_signal"] == "SIGQUIT" and "https://127.0.0.1:8443/tls-health" in " ".join(
        tls["healthcheck"]["test"]
    )
    assert tls["cap_drop"] == ["ALL"] and tls["read_only"] is True and tls["pids_limit"] == 1024
    mounts = {v["target"]: v for v in tls["volumes"]}
    assert mounts["/certs"]["read_only"] is True and mounts["/certs"]["source"].endswith(
        "services/tls/no-certs"
    )
    # The proxy reads what tls-init issued, read-only; only tls-init (no network) has the CA's key.
    assert mounts["/tls-ca"]["source"] == "tls-certs" and mounts["/tls-ca"]["read_only"] is True
    assert tls["depends_on"]["tls-init"]["condition"] == "service_completed_successfully"
    init = services["tls-init"]
    assert {v["target"]: v["source"] for v in init["volumes"]}["/tls-ca"] == "tls-ca"
    assert init["network_mode"] == "none" and init["restart"] == "no"
    assert all(v["source"] != "tls-ca" for v in tls["volumes"])
    exposed = compose_config(
        "tls",
        env={"TLS_BIND_ADDRESS": "0.0.0.0", "TLS_PORT": "443", "TLS_CERT_DIR": "/etc/mine"},
        tmp_path=tmp_path,
    )["services"]["tls"]
    assert [(p["host_ip"], p["published"]) for p in exposed["ports"]] == [("0.0.0.0", "443")]
    assert {v["target"]: v["source"] for v in exposed["volumes"]}["/certs"] == "/etc/mine"
    # Without the profile there is no proxy.
    assert "tls" not in compose_config("pyfunc", tmp_path=tmp_path)["services"]


def test_memory_limits_are_knobs_with_no_limit_by_default(tmp_path):
    services = compose_config("pyfunc", tmp_path=tmp_path)["services"]
    assert {
        name: services[name].get("mem_limit") for name in ("tracking", "gateway", "pyfunc")
    } == dict.fromkeys(("tracking", "gateway", "pyfunc"), services["pyfunc"].get("mem_limit"))
    assert services["pyfunc"].get("mem_limit") in (None, "0", 0)
    limited = compose_config(
        "pyfunc", env={"MODEL_MEMORY_LIMIT": "6g", "SERVICE_MEMORY_LIMIT": "1g"}, tmp_path=tmp_path
    )["services"]
    assert int(limited["pyfunc"]["mem_limit"]) == 6 * 1024**3
    assert int(limited["tracking"]["mem_limit"]) == int(limited["gateway"]["mem_limit"]) == 1024**3
