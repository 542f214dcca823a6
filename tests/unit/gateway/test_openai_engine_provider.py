"""The `openai-compatible` gateway provider (gateway/openai_engine_provider.py) in MLflow's real
gateway app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from loopback import free_port, serving


def test_provider_is_registered_through_the_entry_point():
    from mlflow.gateway.provider_registry import provider_registry

    from gateway.openai_engine_provider import OpenAIEngineProvider

    assert provider_registry.get("openai-compatible") is OpenAIEngineProvider


def test_an_openai_compatible_server_that_is_down_is_a_503_naming_it():
    from mlflow.gateway.app import create_app_from_config

    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings

    base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    settings = GatewaySettings(
        model_id="/models/tiny-ja",
        model_backend="pyfunc",
        openai_compatible_endpoints=f"far={base}",
    )
    config = validate(render(settings, has_completions=lambda url: None))
    with TestClient(create_app_from_config(config)) as gateway:
        for path, body in (
            ("far", {"messages": [{"role": "user", "content": "x"}]}),
            ("far-completions", {"prompt": "x"}),
        ):
            r = gateway.post(f"/gateway/{path}/invocations", json=body)
            assert r.status_code == 503, r.text
            assert r.json()["detail"] == (
                f"The OpenAI-compatible server of endpoint {path!r} is unreachable "
                "(connection refused): it is still starting, or down"
            )
        gateway.portal.call(close_pooled_session)


def test_an_engine_that_redirects_is_a_502_and_the_prompt_goes_nowhere_else():
    """A 307 would re-POST the prompt, and the endpoint's API key, to wherever it points."""
    from mlflow.gateway.app import create_app_from_config
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, RedirectResponse
    from starlette.routing import Route

    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings

    elsewhere: list[str] = []

    async def redirect(request):
        return RedirectResponse("/elsewhere", status_code=307)

    async def record(request):
        elsewhere.append(await request.body())
        return JSONResponse({"choices": []})

    engine = Starlette(
        routes=[
            Route("/v1/chat/completions", redirect, methods=["POST"]),
            Route("/elsewhere", record, methods=["POST"]),
        ]
    )
    with serving(engine) as url:
        settings = GatewaySettings(
            model_id="/models/tiny-ja",
            model_backend="pyfunc",
            openai_compatible_endpoints=f"far={url}/v1#m",
        )
        config = validate(render(settings, has_completions=lambda url: False))
        with TestClient(create_app_from_config(config)) as gateway:
            r = gateway.post(
                "/gateway/far/invocations", json={"messages": [{"role": "user", "content": "x"}]}
            )
            gateway.portal.call(close_pooled_session)
    assert r.status_code == 502, r.text
    assert r.json()["detail"] == (
        "The OpenAI-compatible server of endpoint 'far' answered with a redirect (HTTP 307), "
        "which is not followed"
    )
    assert elsewhere == []


def test_each_server_gets_the_key_its_entry_names(monkeypatch):
    from mlflow.gateway.app import create_app_from_config
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings

    seen: dict[str, str | None] = {}

    def engine(name: str) -> Starlette:
        async def chat(request):
            seen[name] = request.headers.get("authorization")
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

    monkeypatch.setenv("TEAM_KEY", "team-secret")
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "shared-secret")
    with serving(engine("team")) as team, serving(engine("other")) as other:
        settings = GatewaySettings(
            model_id="/models/tiny-ja",
            model_backend="pyfunc",
            openai_compatible_endpoints=f"team={team}/v1#m;key=TEAM_KEY,other={other}/v1#m",
            openai_compatible_api_key="shared-secret",
        )
        config = validate(render(settings, has_completions=lambda url: False))
        with TestClient(create_app_from_config(config)) as gateway:
            for name in ("team", "other"):
                r = gateway.post(
                    f"/gateway/{name}/invocations",
                    json={"messages": [{"role": "user", "content": "x"}]},
                )
                assert r.status_code == 200, r.text
            gateway.portal.call(close_pooled_session)
    assert seen == {"team": "Bearer team-secret", "other": "Bearer shared-secret"}


def test_an_engines_stream_is_passed_on_as_it_comes_and_a_break_is_an_error_event():
    """A stand-in OpenAI-compatible engine streams its answer; the gateway passes each chunk on
    (with OpenAI's [DONE]); one that refuses before its first chunk keeps its status; one that
    breaks off mid-answer ends the stream with an error event."""
    import json

    from mlflow.gateway.app import create_app_from_config
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from gateway.answer_stream import StreamedAnswers
    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings

    asked: list[dict] = []

    def chunk(content=None, finish=None, usage=None) -> bytes:
        delta = {} if content is None else {"content": content}
        event = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({"usage": usage} if usage else {}),
        }
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()

    async def chat(request):
        body = await request.json()
        asked.append(body)
        said = body["messages"][-1]["content"]
        if said == "busy":
            return JSONResponse({"error": {"message": "queue full"}}, status_code=429)

        async def events():
            yield chunk("りん")
            yield chunk("ご")
            if said == "break":
                error = {"error": {"message": "the engine ran out of memory", "code": 500}}
                yield f"data: {json.dumps(error)}\n\n".encode()
                return
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            yield chunk(None, "stop", usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    engine = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with serving(engine) as url:
        settings = GatewaySettings(
            model_id="/models/tiny-ja",
            model_backend="pyfunc",
            openai_compatible_endpoints=f"far={url}/v1#m",
        )
        config = validate(render(settings, has_completions=lambda url: None))
        with TestClient(StreamedAnswers(create_app_from_config(config))) as gateway:

            def ask(content: str):
                return gateway.post(
                    "/v1/chat/completions",
                    json={
                        "model": "far",
                        "messages": [{"role": "user", "content": content}],
                        "stream": True,
                    },
                )

            r = ask("hello")
            assert r.status_code == 200, r.text
            events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["りん", "ご", None]
            assert chunks[-1]["usage"]["completion_tokens"] == 2
            assert asked[-1]["stream"] is True and asked[-1]["model"] == "m"
            assert asked[-1]["stream_options"] == {"include_usage": True}

            r = ask("busy")
            assert r.status_code == 429 and r.json()["detail"] == "queue full", r.text

            r = ask("break")
            assert r.status_code == 200
            events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])["error"]
            assert error == {"message": "the engine ran out of memory", "code": 500}, events
            assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == [
                "りん",
                "ご",
            ]
            gateway.portal.call(close_pooled_session)


def test_the_llamacpp_engine_that_stopped_says_why(tmp_path, monkeypatch):
    """A model the converter could not read stops the engine; the prompt's 503 gives the reason
    it left in the model-state file, on the chat route and in a stream."""
    from mlflow.gateway.app import create_app_from_config

    from gateway import openai_engine_provider
    from gateway.app import as_served
    from gateway.engine_http import close_pooled_session
    from gateway.render_config import render, validate
    from gateway.settings import GatewaySettings
    from promptlab_stack.model_state import FAILED, write_state

    state = tmp_path / "model-server.json"
    monkeypatch.setattr(openai_engine_provider, "STATE_PATH", state)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    settings = GatewaySettings(models="tiny=/models/tiny", model_backend="llamacpp")
    config = validate(render(settings, urls={"llamacpp": url}, has_completions=lambda u: None))
    body = {"messages": [{"role": "user", "content": "x"}]}
    with TestClient(as_served(create_app_from_config(config), settings)) as gateway:
        r = gateway.post("/gateway/tiny/invocations", json=body)
        assert r.status_code == 503
        assert r.json()["detail"].startswith(
            "The llamacpp engine (service 127.0.0.1) is unreachable"
        )
        reason = "model 'tiny' (/models/tiny) failed: it cannot be converted to GGUF. Fix: ..."
        write_state(
            {"tiny": {"model_id": "/models/tiny", "state": FAILED, "message": reason}},
            state,
            stopped=True,
        )
        for stream in (False, True):
            r = gateway.post("/gateway/tiny/invocations", json={**body, "stream": stream})
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith(reason), r.text
            assert "run docker compose up -d again" in r.json()["detail"]
        gateway.portal.call(close_pooled_session)
