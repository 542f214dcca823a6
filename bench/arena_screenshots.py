"""The README's pictures of an answer as it is generated: the blind comparison page, a second
apart, while a model of llm-jp-3-3.7b's width (bench/real_shape.py, 2 layers, random weights: a
slow model on a CPU) and the tiny test model answer side by side.

The stack is the user's: `docker compose --profile pyfunc up` from this checkout, with the two
model folders under bench/work as LOCAL_MODELS_DIR; Chromium (Playwright) on the page's address.

    BASE_IMAGE=local/python:3.11-bookworm python -m bench.arena_screenshots

Writes docs/images/arena-streaming-1.png and -2.png (one second apart), then takes the stack down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.real_shape import build_real_shape_model
from bench.servers import REPO
from scripts.loopback import free_port

PROJECT = "promptlab-shots"
CHROMIUM = os.environ.get("PROMPTLAB_CHROMIUM", "/usr/bin/chromium")


def compose(env: dict, *args: str) -> None:
    subprocess.run(
        ["docker", "compose", "--profile", "pyfunc", *args], cwd=REPO, env=env, check=True
    )


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import expect, sync_playwright

    from scripts.make_tiny_model import build_tiny_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = p.parse_args(argv)
    slow = build_real_shape_model(args.work / "real-shape-2", 2)
    fast = args.work / "tiny-ja"
    if not (fast / "config.json").exists():
        build_tiny_model(fast)
    for path in [args.work, *slow.rglob("*"), *fast.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the containers run as uid 1000
    port = free_port()
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "LOCAL_MODELS_DIR": str(args.work),
        "MODELS": f"/models/{slow.name},/models/{fast.name}",
        "MLFLOW_PORT": str(port),
    }
    compose(env, "up", "-d", "--build", "--wait")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 760}, locale="ja-JP")
            page.goto(f"http://127.0.0.1:{port}/promptlab/arena?experiment_id=0")
            page.get_by_label("プロンプト（変数は {{ name }}）").fill("日本の首都はどこですか？")
            page.get_by_label("最大トークン数").fill("48")
            page.get_by_role("button", name="比較する").click()
            answers = page.locator("section", has=page.locator("#answers-title"))
            for n in (1, 2):
                page.wait_for_timeout(1000)
                answers.screenshot(path=str(args.out / f"arena-streaming-{n}.png"))
            expect(page.get_by_role("button", name="引き分け")).to_be_enabled(timeout=300_000)
            browser.close()
    finally:
        compose(env, "down", "-v")
    print(f"wrote {args.out / 'arena-streaming-1.png'} and -2.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
