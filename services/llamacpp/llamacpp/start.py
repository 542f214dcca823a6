"""The llamacpp engine's entrypoint: read the settings, open the engine's port (front.py), make
each model of MODELS a GGUF file (weights.py: downloaded, or converted once from a Hugging Face
checkpoint), check that they fit in memory, then run llama-server in router mode on them
(server_command.py) behind the front.

While the files are being made, the port answers 503 with what each model is doing. A bad setting
or a model problem that waiting cannot fix stops the container the stack's way
(promptlab_stack/stop.py): status 0 and a last log line naming the cause and the fix; a model
problem also goes to the state file, so the gateway's 503 says it. llama-server exiting on its own
is a crash (a non-zero status: compose restarts the container). SIGTERM lets the requests in
flight finish (up to the generation timeout), then stops llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from aiohttp import web

from llamacpp.front import Front
from llamacpp.health import every_model_loaded, statuses_in
from llamacpp.prompts import Prompts
from llamacpp.server_command import preset, server_command
from llamacpp.settings import LlamaCppSettings
from llamacpp.states import States
from llamacpp.weights import GGUF_CACHE, ModelProblem, Weights, check_memory, weights_of
from promptlab_stack.memory import available_memory_bytes
from promptlab_stack.model_state import CONVERTING, DOWNLOADING, FAILED, LOADING, QUEUED, READY
from promptlab_stack.settings import SettingsError
from promptlab_stack.stop import stop_service
from promptlab_stack.topology import LLAMACPP, MODEL_STATE_PATH

logger = logging.getLogger("llamacpp.start")

SERVICE = "llamacpp engine"
PRESET_FILE = Path(tempfile.gettempdir()) / "llamacpp-models.ini"
CRASHED = 1


def prepare(
    settings: LlamaCppSettings, states: States, cache: Path = GGUF_CACHE
) -> tuple[dict[str, Weights], Prompts]:
    """endpoint -> its weights, every model's tokenizer; raises ModelProblem."""
    found = {}
    for model in settings.served_models:

        def report(what: str, endpoint: str = model.endpoint, model_id: str = model.model_id):
            state = DOWNLOADING if what.startswith("downloading") else CONVERTING
            states.set(endpoint, state, f"model {endpoint!r} ({model_id}): {what}")

        found[model.endpoint] = weights_of(model, settings, report, cache)
    check_memory(found, settings, available_memory_bytes())
    return found, Prompts({name: w.checkpoint for name, w in found.items()})


def stop_on(problem: ModelProblem, settings: LlamaCppSettings, states: States) -> int:
    """Leave the reason in the state file and as the last log line; stop without a restart."""
    for m in settings.served_models:
        failed = m.endpoint in problem.model.endpoint.split(",")
        states.set(
            m.endpoint,
            FAILED if failed else QUEUED,
            f"model {m.endpoint!r} ({m.model_id}) failed: {problem}"
            if failed
            else f"not started: another model failed ({problem})",
            stopped=True,
        )
    return stop_service(SERVICE, problem)


def in_daemon_thread(function, *args) -> asyncio.Future:
    """`function(*args)` in a thread that does not keep the process alive when it stops (a
    conversion stopped by docker stop starts over at the next start)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as e:  # handed to the event loop, which raises it there
            loop.call_soon_threadsafe(future.set_exception, e)
        else:
            loop.call_soon_threadsafe(future.set_result, result)

    threading.Thread(target=run, name="prepare", daemon=True).start()
    return future


async def wait_until_loaded(front: Front, server: asyncio.subprocess.Process) -> bool:
    """Until llama-server lists every model loaded (False: it exited first)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while server.returncode is None:
            try:
                async with session.get(f"{front.backend}/models") as resp:
                    if every_model_loaded(statuses_in(await resp.json())):
                        return True
            except (aiohttp.ClientError, OSError, ValueError, AttributeError, TypeError):
                pass
            await asyncio.sleep(0.5)
    return False


async def serve(
    settings: LlamaCppSettings, states: States, port: int = LLAMACPP.port, cache: Path = GGUF_CACHE
) -> int:
    """The front on `port`, llama-server's router on the next port, on loopback only."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    front = Front(states, settings.max_request_bytes)
    # No access log: the healthcheck polls every few seconds (the states are logged as they change).
    runner = web.AppRunner(front.app(), handle_signals=False, access_log=None)
    await runner.setup()
    # On SIGTERM the port closes and the requests in flight get the generation's time to finish.
    site = web.TCPSite(
        runner, "0.0.0.0", port, shutdown_timeout=settings.generation_timeout_seconds
    )
    await site.start()
    server = None
    try:
        preparing = in_daemon_thread(prepare, settings, states, cache)
        await asyncio.wait(
            [preparing, asyncio.ensure_future(stopping.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not preparing.done():
            return 0  # stopped while preparing: a conversion starts over at the next start
        try:
            found, prompts = preparing.result()
        except ModelProblem as problem:
            return stop_on(problem, settings, states)
        for endpoint, w in found.items():
            states.set(
                endpoint, LOADING, f"model {endpoint!r}: llama-server is loading {w.gguf.name}"
            )
        PRESET_FILE.write_text(preset({n: w.gguf for n, w in found.items()}), encoding="utf-8")
        command = server_command(settings, PRESET_FILE, len(found), host="127.0.0.1", port=port + 1)
        logger.info("Starting %s", " ".join(command))
        server = await asyncio.create_subprocess_exec(*command)
        front.serve(f"http://127.0.0.1:{port + 1}", prompts)
        if await wait_until_loaded(front, server):
            for endpoint in found:
                states.set(endpoint, READY, f"model {endpoint!r}: ready")
            logger.info("Every model is loaded: %s", ", ".join(found))
        exited = asyncio.ensure_future(server.wait())
        await asyncio.wait(
            [exited, asyncio.ensure_future(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if exited.done():
            logger.error("llama-server exited with status %s", server.returncode)
            return CRASHED
        return 0
    finally:
        await runner.cleanup()  # waits for the requests in flight
        if server is not None and server.returncode is None:
            server.terminate()
            await server.wait()


def main(argv: list[str] | None = None) -> int:
    """The container runs it without arguments; the benchmark runs it on loopback ports of its
    own, with its own state file and GGUF folder."""
    parser = argparse.ArgumentParser(description="the llamacpp engine")
    parser.add_argument("--port", type=int, default=LLAMACPP.port)
    parser.add_argument("--state-file", type=Path, default=MODEL_STATE_PATH)
    parser.add_argument("--gguf-cache", type=Path, default=GGUF_CACHE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = LlamaCppSettings.from_env()
    except SettingsError as e:
        return stop_service(SERVICE, f"settings error: {e}")
    states = States(
        {
            m.endpoint: {
                "model_id": m.model_id,
                "state": QUEUED,
                "at_start": True,
                "message": f"model {m.endpoint!r} ({m.model_id}): waiting for its GGUF file",
            }
            for m in settings.served_models
        },
        args.state_file,
    )
    return asyncio.run(serve(settings, states, args.port, args.gguf_cache))


if __name__ == "__main__":
    sys.exit(main())
