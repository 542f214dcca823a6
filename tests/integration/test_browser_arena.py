"""The blind comparison page (issue 26) in a real browser, in Japanese, on the session's stack:
two tiny models answer one prompt side by side, the user votes, the names are revealed, the
leaderboard counts the vote and is logged as a run; every answer is a trace and the vote is
feedback on both, in MLflow. Then the page's requests with bad input, each a 4xx naming the
problem."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from arena_client import answers, arena_traces, battle, leaderboard, vote
from constants import SECOND_MODEL_NAME as SECOND
from constants import SERVED_MODEL_NAME as FIRST
from reference import greedy_chat
from test_browser_prompt_engineering import (  # noqa: F401 - browser, page: fixtures
    Scenario,
    browser,
    page,
    visible_text,
)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

TEMPLATE = "{{ fruit }}は何色ですか？"
MAX_TOKENS = 12
# Long enough that a tiny model's answer arrives in many pieces (its context is 512 tokens).
LONG_TOKENS = 400


@pytest.fixture(scope="module")
def references(stack_reference_model, stack_reference_model_b):
    return {FIRST: stack_reference_model, SECOND: stack_reference_model_b}


def test_user_votes_blind_between_two_local_models_in_japanese(stack, page, references):  # noqa: F811
    s = Scenario(page)
    experiment_id = stack.create_experiment(f"ブラインド比較 {uuid.uuid4().hex[:8]}")
    question = [{"role": "user", "content": "りんごは何色ですか？"}]
    with s.step(1, "open the page from its address"):
        page.goto(f"{stack.url}/promptlab/arena?experiment_id={experiment_id}")
        expect(page.get_by_role("heading", name="ブラインド比較")).to_be_visible()
        expect(page.get_by_label("実験")).to_have_value(experiment_id)
        boxes = page.locator("#endpoints input[type=checkbox]")
        expect(boxes.first).to_be_visible()
        offered = [b.get_attribute("value") for b in boxes.all()]
        assert FIRST in offered and SECOND in offered, offered
        for box in boxes.all():  # the two models, not the judge
            if box.get_attribute("value") not in (FIRST, SECOND):
                box.uncheck()
    with s.step(2, "a template with a variable, greedy settings"):
        page.get_by_label("プロンプト（変数は {{ name }}）").fill(TEMPLATE)
        page.get_by_label("fruit", exact=True).fill("りんご")
        page.get_by_label("Temperature").fill("0")
        page.get_by_label("最大トークン数").fill(str(MAX_TOKENS))
    with s.step(3, "both answers come in, without names"):
        page.get_by_role("button", name="比較する").click()
        expect(page.get_by_role("button", name="A が良い")).to_be_enabled(timeout=120_000)
        a = page.get_by_role("region", name="回答 A").locator(".text").inner_text()
        b = page.get_by_role("region", name="回答 B").locator(".text").inner_text()
        shown = page.get_by_role("region", name="回答 A").inner_text()
        assert FIRST not in shown and SECOND not in shown, shown
    with s.step(4, "the vote reveals the names"):
        page.get_by_role("button", name="A が良い").click()
        reveal = page.get_by_role("status")
        expect(reveal).to_contain_text("A は ")
        text = reveal.inner_text()
        winner, loser = (
            (FIRST, SECOND) if text.index(FIRST) < text.index(SECOND) else (SECOND, FIRST)
        )
        assert text == f"A は {winner}、B は {loser} でした", text
    with s.step(5, "each answer is greedy decoding of the model that gave it"):
        assert visible_text(a) == visible_text(
            greedy_chat(*references[winner], question, MAX_TOKENS)
        )
        assert visible_text(b) == visible_text(
            greedy_chat(*references[loser], question, MAX_TOKENS)
        )
    with s.step(6, "the leaderboard counts the vote"):
        board = page.locator("#board")
        expect(board).to_contain_text("人の投票 (1 票)")
        first_row = board.locator("table").first.locator("tbody tr").first
        expect(first_row).to_contain_text(winner)
        s.screenshot("arena-ja.png")
    with s.step(7, "the board is logged as a run of the experiment"):
        page.get_by_role("button", name="リーダーボードを run として記録").click()
        link = page.locator("#log-result a")
        expect(link).to_be_visible()
        status, run = stack.request(
            "GET", "ajax-api/2.0/mlflow/runs/get", query={"run_id": link.inner_text()}
        )
        assert status == 200, run
        metrics = {m["key"]: m["value"] for m in run["run"]["data"]["metrics"]}
        assert metrics[f"human.{winner}.score"] > metrics[f"human.{loser}.score"], metrics
        assert metrics["human.votes"] == 1
    with s.step(8, "in MLflow: two traces, the vote as feedback on both, by the user"):
        traces = arena_traces(stack, experiment_id)
        assert len(traces) == 2, traces
        by_side = {t["tags"]["promptlab.arena.side"]: t for t in traces}
        assert by_side["A"]["trace_metadata"]["promptlab.arena.endpoint"] == winner
        values = {
            side: [
                x["feedback"]["value"]
                for x in info.get("assessments", [])
                if x["assessment_name"] == "arena_preference"
            ]
            for side, info in by_side.items()
        }
        assert values == {"A": ["win"], "B": ["loss"]}, values
        sources = {
            x["source"]["source_id"]
            for info in by_side.values()
            for x in info.get("assessments", [])
        }
        assert sources == {"anonymous"}, sources
    with s.step(9, "a long answer shows on the screen while the rest is being generated"):
        # Every change of side A's text, timed in the page, until the vote buttons come on.
        page.evaluate(
            """() => {
              window.seen = [];
              const text = document.getElementById("text-A");
              new MutationObserver(() => {
                const voting = !document.querySelector("button.vote").disabled;
                window.seen.push([text.textContent.length, voting]);
              }).observe(text, {childList: true, characterData: true, subtree: true});
            }"""
        )
        page.get_by_label("最大トークン数").fill(str(LONG_TOKENS))
        page.get_by_role("button", name="比較する").click()
        expect(page.get_by_role("button", name="引き分け")).to_be_enabled(timeout=120_000)
        seen = page.evaluate("window.seen")
        growing = sorted({n for n, voting in seen if n and not voting})
        # Many partial texts were on the screen before the answer was complete.
        assert len(growing) >= 3, seen
        a = page.get_by_role("region", name="回答 A").locator(".text").inner_text()
        page.get_by_role("button", name="引き分け").click()
        expect(page.get_by_role("status")).to_contain_text("A は ")
        text = page.get_by_role("status").inner_text()
        name_a = FIRST if text.index(FIRST) < text.index(SECOND) else SECOND
        whole = greedy_chat(*references[name_a], question, LONG_TOKENS)
        assert visible_text(a) == visible_text(whole)
        assert growing[0] < max(n for n, _ in seen), seen
    with s.step(10, "a Prompt Registry version as the template, recorded with the answers"):
        from mlflow import MlflowClient

        name = f"fruit-color-{uuid.uuid4().hex[:6]}"
        MlflowClient(stack.url).register_prompt(name=name, template="{{ fruit }}の味は？")
        page.get_by_label("プロンプトレジストリのバージョン（任意）").fill(f"prompts:/{name}/1")
        page.get_by_role("button", name="読み込む").click()
        expect(page.get_by_label("プロンプト（変数は {{ name }}）")).to_have_value(
            "{{ fruit }}の味は？"
        )
        page.get_by_label("fruit", exact=True).fill("バナナ")
        page.get_by_label("最大トークン数").fill(str(MAX_TOKENS))
        page.get_by_role("button", name="比較する").click()
        expect(page.get_by_role("button", name="どちらも悪い")).to_be_enabled(timeout=120_000)
        page.get_by_role("button", name="どちらも悪い").click()
        expect(page.get_by_role("status")).to_contain_text("A は ")
        traces = [
            t
            for t in arena_traces(stack, experiment_id)
            if t["trace_metadata"].get("promptlab.arena.prompt_uri") == f"prompts:/{name}/1"
        ]
        assert len(traces) == 2, traces
        assert {
            json.loads(t["trace_metadata"]["promptlab.arena.variables"])["fruit"] for t in traces
        } == {"バナナ"}
    with s.step(11, "the rows of a CSV saved by Excel (CP932) fill the variables, one per battle"):
        page.set_input_files(
            "#dataset",
            files=[
                {
                    "name": "果物.csv",
                    "mimeType": "text/csv",
                    "buffer": "fruit\r\nみかん\r\nもも\r\n".encode("cp932"),
                }
            ],
        )
        expect(page.locator("#row-label")).to_have_text("行 1 / 2")
        expect(page.get_by_label("fruit", exact=True)).to_have_value("みかん")
        page.get_by_role("button", name="比較する").click()
        expect(page.get_by_role("button", name="A が良い")).to_be_enabled(timeout=120_000)
        page.get_by_role("button", name="A が良い").click()
        expect(page.locator("#row-label")).to_have_text("行 2 / 2")
        expect(page.get_by_label("fruit", exact=True)).to_have_value("もも")


def test_bad_requests_get_a_4xx_that_names_the_problem(stack, references):
    experiment_id = stack.create_experiment(f"arena-bad-{uuid.uuid4().hex[:8]}")
    ok = {
        "experiment_id": experiment_id,
        "prompt": "りんごは？",
        "endpoints": [FIRST, SECOND],
        "max_tokens": 4,
    }
    cases = [
        ({**ok, "prompt": "  "}, 400, "prompt"),
        ({**ok, "prompt": "{{ fruit }}は？"}, 400, "{{ fruit }}"),
        ({**ok, "endpoints": [FIRST, "nope"]}, 400, "nope"),
        ({**ok, "endpoints": [FIRST]}, 400, "at least two"),
        ({**ok, "temperature": 5}, 400, "temperature"),
        ({**ok, "experiment_id": "987654321"}, 404, "987654321"),
    ]
    for body, status, words in cases:
        got, answer = battle(stack, body)
        assert got == status and words in answer["message"], (body, got, answer)
    status, found = battle(stack, ok)
    assert status == 200, found
    battle_id, texts, done = answers(found)
    assert all(not d["failure"] for d in done.values()) and found[-1] == {
        "recorded": True,
        "votable": True,
    }
    status, revealed = vote(stack, experiment_id, battle_id, "A")
    assert status == 200, revealed
    question = [{"role": "user", "content": "りんごは？"}]
    for side in ("A", "B"):  # the streamed answers, exactly greedy decoding
        model = references[revealed[side]["endpoint"]]
        assert texts[side] == greedy_chat(*model, question, 4), side
    status, body = vote(stack, experiment_id, battle_id, "B")
    assert status == 409 and "already" in body["message"], body
    status, body = vote(stack, experiment_id, "0" * 32, "A")
    assert status == 404 and "no battle" in body["message"], body
    status, body = vote(stack, experiment_id, battle_id, "maybe")
    assert status == 400 and "vote" in body["message"], body
    assert leaderboard(stack, experiment_id)["human"]["votes"] == 1

    # A dataset as Excel saves it (CP932), and one that is not text.
    def upload(data: bytes):
        req = urllib.request.Request(
            f"{stack.url}/promptlab/arena/api/dataset?name=fruits.csv",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = upload("fruit\nりんご\nバナナ\n".encode("cp932"))
    assert status == 200 and body["rows"] == [{"fruit": "りんご"}, {"fruit": "バナナ"}], body
    status, body = upload(b"\x00\x01binary")
    assert status == 400 and "fruits.csv" in body["message"], body
