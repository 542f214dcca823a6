"""A user works in MLflow's Prompt Engineering UI and Playground in Japanese, in a real browser
(issues 4 and 13).

Playwright (sync API) drives Debian's Chromium against the session's compose stack (the `stack`
fixture of conftest.py, shared with the other compose tests). The steps build on each other, so
they form one scenario; every step names itself when it fails and leaves a screenshot in
test-artifacts/screenshots/failure-step-N.png. Assertions read the DOM, never pixels.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from constants import CHAT_ENDPOINT as CHAT
from constants import COMPLETIONS_ENDPOINT as COMPLETIONS
from constants import REPO
from constants import SECOND_MODEL_NAME as SECOND

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

TEMPLATE = "{{ object }}は何色ですか？"
MAX_TOKENS = 16
EVALUATE_TIMEOUT_S = 60
SHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("PROMPTLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# -- helpers ------------------------------------------------------------------------------------
def visible_text(text: str) -> str:
    """Text without control/format characters and whitespace: what a DOM cell and a textarea
    showing the same (random-model) answer have in common."""
    return "".join(
        c for c in text if not c.isspace() and not unicodedata.category(c).startswith("C")
    )


def escaped_text(raw: str) -> list[str]:
    """\\uXXXX escapes of printable characters (JSON must escape control characters only)."""
    return [e for e in re.findall(r"\\u[0-9a-fA-F]{4}", raw) if int(e[2:], 16) >= 0x20]


class Scenario:
    """The page plus what the browser saw go wrong, for failure messages."""

    def __init__(self, page):
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._on_console)
        page.on("response", self._on_response)

    # MLflow asks for the signed-in user and the users; without the auth app those are harmless
    # 404s.
    _NOISE = re.compile(r"/ajax-api/2\.0/mlflow/users/(current|list)")

    def _on_console(self, message) -> None:
        if message.type == "error" and not self._NOISE.search(message.location.get("url", "")):
            self.problems.append(f"console error: {message.text[:300]}")

    def _on_response(self, response) -> None:
        if (
            response.status >= 400
            and "/ajax-api/" in response.url
            and not self._NOISE.search(response.url)
        ):
            self.problems.append(
                f"HTTP {response.status} {response.request.method} {response.url[:200]}"
            )

    @contextmanager
    def step(self, n: int, description: str):
        started = time.monotonic()
        try:
            yield
            print(f"step {n} ({description}): {time.monotonic() - started:.1f} s")
        except Exception as exc:  # noqa: BLE001 - re-raised with the step's name
            SHOTS.mkdir(parents=True, exist_ok=True)
            shot = SHOTS / f"failure-step-{n}.png"
            try:
                self.page.screenshot(path=str(shot))
                where = f"screenshot: {shot.relative_to(REPO)}"
            except Exception as shot_exc:  # noqa: BLE001
                where = f"no screenshot ({shot_exc})"
            seen = "".join(f"\n  {p}" for p in self.problems[-8:])
            raise AssertionError(
                f"Step {n} ({description}) failed: {exc}\n[{where}; url: {self.page.url}]"
                + (f"\nThe browser saw:{seen}" if seen else "")
            ) from exc

    def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        # No focus ring or tooltip left over from the last click in the picture.
        self.page.evaluate("document.activeElement && document.activeElement.blur()")
        self.page.mouse.move(1, 1)
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(path))
        return path

    def dismiss_popups(self, wait_ms: int = 0) -> None:
        """MLflow 3 opens its Assistant side panel on first load and may show feature tours."""
        page = self.page
        assistant_close = page.locator("[data-assistant-ui]").get_by_role("button", name="Close")
        try:
            assistant_close.wait_for(state="visible", timeout=max(wait_ms, 1))
            assistant_close.click()
        except sync_api.TimeoutError:
            pass
        for name in ("Got it", "Dismiss", "Skip"):
            button = page.get_by_role("button", name=name, exact=True)
            if button.count() and button.first.is_visible():
                button.first.click()


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="ja-JP")
    context.set_default_timeout(30_000)
    context.set_default_navigation_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


# -- the Prompt Engineering dialog --------------------------------------------------------------
def open_prompt_engineering_dialog(s: Scenario):
    page = s.page
    page.get_by_role("button", name="New run").click()
    page.get_by_role("menuitem", name=re.compile(r"using Prompt Engineering")).click()
    dialog = page.get_by_role("dialog").filter(has=page.get_by_test_id("prompt-template-input"))
    expect(dialog).to_be_visible()
    return dialog


def pick_endpoint(s: Scenario, dialog, name: str) -> list[str]:
    """Opens the 'Served LLM model' combobox, returns the endpoint names offered, picks `name`."""
    page = s.page
    dialog.get_by_role("combobox", name="Served LLM model").click()
    options = page.get_by_role("listbox").get_by_role("option")
    expect(options.first).to_be_visible()
    # Each option shows the endpoint's name, then (smaller) the model it serves.
    names = [o.inner_text().strip().splitlines()[0].strip() for o in options.all()]
    if name in names:
        options.nth(names.index(name)).click()
        expect(dialog.get_by_role("combobox", name="Served LLM model")).to_have_text(name)
    else:
        page.keyboard.press("Escape")
    return names


def fill_prompt(s: Scenario, dialog, value: str, run_name: str) -> None:
    page = s.page
    dialog.get_by_test_id("run-name-input").fill(run_name)
    dialog.get_by_label("Prompt Template").fill(TEMPLATE)
    # The dialog adds one input per {{ variable }} of the template, labelled with its name.
    variable = dialog.get_by_label("object", exact=True)
    expect(variable).to_be_visible()
    variable.fill(value)
    dialog.get_by_test_id("max_tokens").fill(str(MAX_TOKENS))
    # Temperature is a slider with a number box beside it; 0 is its minimum (greedy decoding).
    temperature = dialog.locator("div").filter(has=page.locator("label[for=temperature]")).last
    temperature.locator("input[type=number]").fill("0")
    temperature.locator("input[type=number]").press("Tab")
    expect(temperature.get_by_role("slider")).to_have_attribute("aria-valuenow", "0")


def evaluate(s: Scenario, dialog) -> tuple[str, str]:
    """Clicks Evaluate; returns (the answer in the Output box, the metadata line beside it)."""
    dialog.get_by_test_id("button-evaluate").click()
    output = dialog.get_by_test_id("prompt-output")
    deadline = time.monotonic() + EVALUATE_TIMEOUT_S
    while True:
        # While evaluating, the Output box is replaced by a skeleton; an error shows under it.
        if output.is_visible() and output.input_value():
            break
        error = dialog.locator(".du-bois-light-form-message, [role=alert]").filter(
            has_text=re.compile(r"\S")
        )
        if error.count() and not dialog.get_by_test_id("button-cancel").is_visible():
            raise AssertionError(
                f"Evaluate showed an error instead of an answer: {error.first.inner_text()!r}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer in the Output box within {EVALUATE_TIMEOUT_S} s")
        s.page.wait_for_timeout(250)
    metadata = dialog.get_by_text(re.compile(r"total tokens"))
    expect(metadata).to_be_visible()
    return output.input_value(), metadata.locator("xpath=..").inner_text()


def check_token_count(metadata: str) -> int:
    assert "NaN" not in metadata, f"token count is not a number: {metadata!r}"
    match = re.search(r"(\d+)\s+total tokens", metadata)
    assert match, f"no '<n> total tokens' beside the output: {metadata!r}"
    total = int(match.group(1))
    assert total > MAX_TOKENS, (
        f"total tokens {total} should count the prompt and {MAX_TOKENS} new tokens"
    )
    return total


def create_run(s: Scenario, dialog) -> None:
    create = dialog.get_by_test_id("button-create-run")
    expect(create).to_be_enabled()
    create.click()
    expect(dialog).to_be_hidden(timeout=60_000)


# -- the experiment's evaluation view -----------------------------------------------------------
def evaluation_table(s: Scenario):
    """Switches the runs view to 'Artifact evaluation' (if not already) and returns its grid."""
    page = s.page
    mode = page.locator('label:has(input[name="runs-view-mode"][value="ARTIFACT"])')
    if not mode.locator("input").is_checked():
        mode.click()
    expect(mode.locator("input")).to_be_checked()
    expect(page.get_by_test_id("dropdown-tables")).to_contain_text("eval_results_table.json")
    grid = page.get_by_role("grid").filter(has=page.get_by_role("columnheader", name="object"))
    expect(grid).to_be_visible()
    return grid


def group_by_prompt_too(s: Scenario) -> None:
    """Adds the 'prompt' column to 'Group by' (the default shows only the variables)."""
    page = s.page
    page.get_by_role("combobox", name='Select "group by" columns').click()
    option = page.get_by_role("listbox").get_by_role("option", name="prompt", exact=True)
    if option.get_attribute("aria-selected") != "true":
        option.click()
    expect(option).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Escape")
    expect(page.get_by_role("listbox")).to_be_hidden()


def artifact_viewer_text(s: Scenario, node_name: str, title: str) -> str:
    page = s.page
    page.get_by_test_id("artifact-tree-node").filter(
        has_text=re.compile(rf"^{re.escape(node_name)}$")
    ).click()
    expect(page.get_by_title(title, exact=True)).to_be_visible()
    as_table = page.get_by_role("checkbox", name="View as table")
    if as_table.count() and as_table.is_checked():
        as_table.uncheck()  # the raw text, not MLflow's table rendering of the JSON
    viewer = page.locator(".mlflow-ShowArtifactPage pre")
    expect(viewer).to_contain_text("りんご")
    return viewer.inner_text()


def new_run(s: Scenario, runs_view: str, endpoint: str, value: str, run_name: str) -> str:
    """From the runs view: a Prompt Engineering run of the template on `endpoint`; its answer."""
    page = s.page
    page.goto(runs_view)
    expect(page.get_by_role("button", name="New run")).to_be_visible(timeout=60_000)
    s.dismiss_popups()
    dialog = open_prompt_engineering_dialog(s)
    offered = pick_endpoint(s, dialog, endpoint)
    assert endpoint in offered, f"endpoints offered: {offered}"
    fill_prompt(s, dialog, value, run_name)
    run_answer, metadata = evaluate(s, dialog)
    check_token_count(metadata)
    create_run(s, dialog)
    return run_answer


# -- the scenario -------------------------------------------------------------------------------
def test_user_runs_the_prompt_engineering_workflow_in_japanese(stack, page):
    s = Scenario(page)
    prompt = TEMPLATE.replace("{{ object }}", "りんご")

    with s.step(1, "open the tracking UI and the new experiment's runs view"):
        experiment = f"ブラウザ試験 {uuid.uuid4().hex[:8]}"
        experiment_id = stack.create_experiment(experiment)
        page.goto(stack.url)
        expect(page.get_by_text(re.compile(r"^3\.17\.2$")).first).to_be_visible(timeout=60_000)
        runs_view = f"{stack.url}/#/experiments/{experiment_id}/runs"
        page.goto(runs_view)
        expect(page.get_by_role("button", name="New run")).to_be_visible(timeout=60_000)
        s.dismiss_popups(wait_ms=3_000)
        expect(page.get_by_text(experiment, exact=True).first).to_be_visible()

    with s.step(2, 'click "New run" → "using Prompt Engineering"'):
        dialog = open_prompt_engineering_dialog(s)

    with s.step(3, f"the endpoint list offers {CHAT} and {COMPLETIONS}; pick {CHAT}"):
        offered = pick_endpoint(s, dialog, CHAT)
        assert {CHAT, COMPLETIONS} <= set(offered), f"endpoints offered: {offered}"

    with s.step(4, "enter the Japanese template, object = りんご, max tokens and temperature 0"):
        fill_prompt(s, dialog, "りんご", "りんごの色")
        expect(dialog.get_by_label("Prompt Template")).to_have_value(TEMPLATE)

    with s.step(
        5,
        f"Evaluate: an answer in the Output box within {EVALUATE_TIMEOUT_S} s, with a token count",
    ):
        answer, metadata = evaluate(s, dialog)
        assert visible_text(answer), f"the answer is empty or unprintable: {answer!r}"
        check_token_count(metadata)
        s.screenshot("step-5-evaluate.png")

    with s.step(6, "Create run: the evaluation table shows りんご, the prompt and the answer"):
        create_run(s, dialog)
        grid = evaluation_table(s)
        group_by_prompt_too(s)
        expect(grid.get_by_role("columnheader").filter(has_text="りんごの色")).to_be_visible()
        expect(grid).to_contain_text("りんご")
        expect(grid).to_contain_text(prompt)
        grid_text = grid.inner_text()
        assert visible_text(answer) in visible_text(grid_text), (answer, grid_text)
        assert "NaN" not in grid_text, grid_text
        s.screenshot("step-6-evaluation-table.png")

    with s.step(7, "the run's artifacts show Japanese text, not \\u escapes"):
        page.get_by_role("link", name="りんごの色", exact=True).first.click()
        page.get_by_role("tab", name="Artifacts").click()
        run_id = re.search(r"/runs/([0-9a-f]{32})", page.url).group(1)

        table_text = artifact_viewer_text(s, "eval_results_table.json", "eval_results_table.json")
        assert not escaped_text(table_text), f"escapes in the viewer: {escaped_text(table_text)}"
        assert prompt in table_text, table_text
        table = json.loads(table_text)
        assert table["columns"][:3] == ["object", "prompt", "output"], table["columns"]
        assert table["data"][0][:2] == ["りんご", prompt], table["data"]
        assert visible_text(table["data"][0][2]) == visible_text(answer), (table["data"], answer)
        s.screenshot("step-7-eval-results-table-json.png")
        # MLflow's viewer re-indents JSON with JSON.stringify, which never writes \u escapes for
        # printable characters: the file itself is checked too (the viewer shows YAML as is).
        raw = stack.artifact_bytes(run_id, "eval_results_table.json").decode("utf-8")
        assert not escaped_text(raw) and "りんご" in raw, raw[:500]

        params_text = artifact_viewer_text(s, "parameters.yaml", "model/parameters.yaml")
        assert "\\u" not in params_text and "\\x" not in params_text, params_text
        assert "object: りんご" in params_text and "は何色ですか？" in params_text, params_text
        params = yaml.safe_load(params_text)
        assert params["prompt_template"] == TEMPLATE and params["prompt_parameters"] == {
            "object": "りんご"
        }
        assert params["model_route"] == CHAT, params
        s.screenshot("step-7-parameters-yaml.png")

    with s.step(
        8, "a second run with object = バナナ appears beside the first in the evaluation table"
    ):
        banana_answer = new_run(s, runs_view, CHAT, "バナナ", "バナナの色")
        grid = evaluation_table(s)
        group_by_prompt_too(s)
        headers = grid.get_by_role("columnheader")
        expect(headers.filter(has_text="りんごの色")).to_be_visible()
        expect(headers.filter(has_text="バナナの色")).to_be_visible()
        for text in ("りんご", prompt, "バナナ", TEMPLATE.replace("{{ object }}", "バナナ")):
            expect(grid).to_contain_text(text)
        grid_text = visible_text(grid.inner_text())
        assert visible_text(answer) in grid_text and visible_text(banana_answer) in grid_text, (
            grid_text
        )
        s.screenshot("step-8-two-runs.png")

    with s.step(
        9,
        f"the same りんご prompt on the second model, {SECOND}, sits beside the first model's run",
    ):
        page.set_viewport_size({"width": 2400, "height": 1000})  # room for three runs' columns
        second_answer = new_run(s, runs_view, SECOND, "りんご", f"りんごの色 ({SECOND})")
        grid = evaluation_table(s)
        group_by_prompt_too(s)
        # Each run's column shows its name and, under it, the endpoint (the model) it ran on.
        headers = grid.get_by_role("columnheader")
        expect(
            headers.filter(has_text=f"りんごの色 ({SECOND})").filter(has_text=SECOND)
        ).to_be_visible()
        expect(
            headers.filter(has_text=re.compile(r"りんごの色(?! \()")).filter(has_text=CHAT)
        ).to_be_visible()
        apple_row = grid.get_by_role("row").filter(has_text=prompt)
        row_text = visible_text(apple_row.inner_text())
        # One row for the りんご prompt, with each model's answer in its run's column.
        assert visible_text(answer) in row_text and visible_text(second_answer) in row_text, (
            row_text
        )
        assert visible_text(answer) != visible_text(second_answer)
        s.screenshot("step-9-two-models.png")


def test_runs_made_by_promptlab_eval_work_in_the_evaluation_view(
    stack, page, stack_reference_model
):
    """Runs of the `promptlab-eval` command: every row of both runs in the evaluation view, and
    "Evaluate all" then Save on a new row, as for runs made in the dialog."""
    s = Scenario(page)
    experiment = f"データセット画面 {uuid.uuid4().hex[:8]}"
    data = 'object,note\r\nりんご,短く\r\nバナナ,"色と、味"\r\n'.encode("cp932")

    with s.step(1, "promptlab-eval makes a run per model from a CP932 CSV"):
        out = stack.exec_tracking(
            "promptlab-eval",
            "--experiment",
            experiment,
            "--template",
            "{{ object }}は何色？{{ note }}",
            "--data",
            "-",
            "--endpoint",
            CHAT,
            "--endpoint",
            SECOND,
            "--max-tokens",
            str(MAX_TOKENS),
            "--run-name",
            "CSV",
            stdin=data,
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        status, body = stack.request(
            "GET",
            "ajax-api/2.0/mlflow/experiments/get-by-name",
            query={"experiment_name": experiment},
        )
        experiment_id = body["experiment"]["experiment_id"]

    with s.step(
        2, "the evaluation view shows both runs and every row, with latency and token counts"
    ):
        page.set_viewport_size({"width": 2000, "height": 1000})
        page.goto(f"{stack.url}/#/experiments/{experiment_id}/runs")
        expect(page.get_by_role("button", name="New run")).to_be_visible(timeout=60_000)
        s.dismiss_popups(wait_ms=2_000)
        grid = evaluation_table(s)
        headers = grid.get_by_role("columnheader")
        expect(headers.filter(has_text=f"CSV ({CHAT})")).to_be_visible()
        expect(headers.filter(has_text=f"CSV ({SECOND})")).to_be_visible()
        for text in ("りんご", "短く", "バナナ", "色と、味"):
            expect(grid.get_by_role("gridcell", name=text, exact=True)).to_be_visible()
        metadata = re.findall(r"\d+ ms,\s+\d+ total tokens", grid.inner_text())
        assert len(metadata) == 4, grid.inner_text()  # two rows on two runs
        s.screenshot("promptlab-eval-1-runs.png")

    with s.step(3, "a new row, then Evaluate all on the first model's run and Save"):
        grid.locator(
            'button[data-component-id*="evaluationtableactionscellrenderer"]'
        ).first.click()
        dialog = page.get_by_role("dialog", name="Add row")
        boxes = dialog.get_by_role("textbox")
        boxes.nth(0).fill("ぶどう")
        boxes.nth(1).fill("新しい行")
        dialog.get_by_role("button", name="Submit").click()
        expect(dialog).to_be_hidden()
        run_header = headers.filter(has_text=f"CSV ({CHAT})")
        run_header.get_by_role("button", name="Evaluate all").click()
        expect(page.get_by_text(re.compile(r"You have 1 unsaved evaluated value"))).to_be_visible(
            timeout=60_000
        )
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text(re.compile(r"unsaved evaluated value"))).to_be_hidden(
            timeout=30_000
        )
        s.screenshot("promptlab-eval-2-evaluate-all.png")

    with s.step(4, "the run's table now has the new row, answered as plain transformers answers"):
        runs = stack.request(
            "POST", "ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]}
        )[1]["runs"]
        run_id = next(r["info"]["run_id"] for r in runs if r["info"]["run_name"] == f"CSV ({CHAT})")
        table = json.loads(stack.artifact_bytes(run_id, "eval_results_table.json"))
        rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
        assert [r["object"] for r in rows] == [
            "ぶどう",
            "りんご",
            "バナナ",
        ]  # the UI puts new rows first
        from reference import greedy_chat

        prompt = "ぶどうは何色？新しい行"
        assert rows[0]["prompt"] == prompt
        assert rows[0]["output"] == greedy_chat(
            *stack_reference_model, [{"role": "user", "content": prompt}], MAX_TOKENS
        )


# -- MLflow 3's Playground, on the AI Gateway endpoints the stack registers (issue 13) -----------
PLAYGROUND_MAX_TOKENS = 8
SYSTEM_PROMPT = "あなたは果物の専門家です。"


def gateway_requests_shown(s: Scenario, stack) -> int:
    """The request count on the AI Gateway's usage page (every endpoint, the last 7 days)."""
    page = s.page
    page.goto(f"{stack.url}/#/gateway/usage")
    page.reload()  # a fresh load: the same hash URL again would keep the figures already shown
    expect(page.get_by_text("Requests", exact=True).first).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + 30
    # The card's title comes first; its figure once the trace metrics have loaded.
    while not (
        shown := re.search(r"\bRequests\s*\n\s*(\d[\d,]*)\s*\n", page.locator("body").inner_text())
    ):
        assert time.monotonic() < deadline, "the usage page shows no request count"
        page.wait_for_timeout(500)
    return int(shown.group(1).replace(",", ""))


def playground_submit(s: Scenario) -> tuple[list[dict], dict]:
    """Clicks Submit; returns (the messages sent, the chat completion the page got back)."""
    page = s.page
    with page.expect_response(
        lambda r: "/gateway/mlflow/v1/chat/completions" in r.url, timeout=EVALUATE_TIMEOUT_S * 1000
    ) as response:
        page.get_by_role("button", name="Submit").click()
    assert response.value.status == 200, response.value.text()
    return json.loads(response.value.request.post_data)["messages"], response.value.json()


def test_user_chats_with_a_local_model_in_the_playground_and_keeps_the_prompt(
    stack, page, stack_reference_model
):
    from reference import greedy_chat

    s = Scenario(page)
    cards = page.get_by_test_id("mlflow.playground.assistant.text_card")
    messages = page.get_by_placeholder("Type a message")

    with s.step(1, "note the AI Gateway's request count, open a GenAI experiment's Playground"):
        before = gateway_requests_shown(s, stack)
        status, body = stack.request(
            "POST",
            "ajax-api/2.0/mlflow/experiments/create",
            {
                "name": f"プレイグラウンド {uuid.uuid4().hex[:8]}",
                "tags": [{"key": "mlflow.experimentKind", "value": "genai_development"}],
            },
        )
        assert status == 200, body
        page.goto(f"{stack.url}/#/experiments/{body['experiment_id']}/playground")
        expect(page.get_by_role("heading", name="Playground")).to_be_visible(timeout=60_000)
        s.dismiss_popups(wait_ms=3_000)

    with s.step(2, f"the endpoint picker offers the stack's chat models; pick {CHAT}"):
        page.get_by_text("Select an endpoint").click()
        options = page.get_by_role("option")
        expect(options.first).to_be_visible()
        offered = [o.inner_text().splitlines()[0].strip() for o in options.all()]
        assert {CHAT, SECOND, "judge"} <= set(offered), offered
        options.nth(offered.index(CHAT)).click()

    with s.step(
        3, "a system prompt, a Japanese question, temperature 0 and max tokens in Settings"
    ):
        page.get_by_role("button", name="Change message role").first.click()
        page.get_by_role("menuitemradio", name="System").click()
        messages.nth(0).fill(SYSTEM_PROMPT)
        page.get_by_role("button", name="Add message").click()
        messages.nth(1).fill("バナナは何色？")
        page.get_by_role("button", name="Open model parameters").click()
        page.locator("[id='mlflow.playground.params.temperature']").fill("0")
        page.locator("[id='mlflow.playground.params.max_tokens']").fill(str(PLAYGROUND_MAX_TOKENS))
        page.keyboard.press("Escape")

    with s.step(4, "Submit: the answer equals greedy decoding, with its token usage under it"):
        sent, answer = playground_submit(s)
        assert sent == [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "バナナは何色？"},
        ]
        content = answer["choices"][0]["message"]["content"]
        assert content == greedy_chat(*stack_reference_model, sent, PLAYGROUND_MAX_TOKENS)
        expect(cards).to_have_count(1)
        assert visible_text(cards.first.inner_text()) == visible_text(content)
        usage = answer["usage"]
        assert usage["completion_tokens"] == PLAYGROUND_MAX_TOKENS
        expect(
            page.get_by_text(
                f"Tokens — input: {usage['prompt_tokens']}, output: {PLAYGROUND_MAX_TOKENS}, "
                f"total: {usage['total_tokens']}"
            )
        ).to_be_visible()

    with s.step(5, "a second turn: the whole conversation goes to the model, answered as greedy"):
        messages.last.fill("リンゴは？")
        sent, answer = playground_submit(s)
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        assert sent[2]["content"] == content
        second = answer["choices"][0]["message"]["content"]
        assert second == greedy_chat(*stack_reference_model, sent, PLAYGROUND_MAX_TOKENS)
        expect(cards).to_have_count(2)
        s.screenshot("playground-ja.png")

    prompt_name = f"fruit-chat-{uuid.uuid4().hex[:6]}"  # registry names: letters, digits, - _ .
    with s.step(6, f"Save prompt: {prompt_name} v1 in the Prompt Registry"):
        page.get_by_role("button", name="Save prompt").click()
        page.locator("[id='mlflow.playground.save_prompt_version.name']").fill(prompt_name)
        page.get_by_role("button", name="Save version").click()
        # The toast (an aria-live copy of it may be there too).
        expect(page.get_by_text(f"Saved {prompt_name} v1 to the registry").first).to_be_visible()
        expect(page.get_by_role("dialog")).to_have_count(0)  # closed, its overlay gone

    with s.step(7, "Clear conversation, then Load prompt brings the saved messages back"):
        page.get_by_role("button", name="Clear conversation").click()
        expect(messages).to_have_count(1)
        expect(messages.first).to_have_value("")
        page.get_by_role("button", name="Load prompt").click()
        page.get_by_text("Select a prompt").click()
        page.get_by_role("option").filter(has_text=prompt_name).click()
        page.get_by_text("Select a version").click()
        page.get_by_role("option", name="v1").click()
        page.get_by_role("button", name="Load", exact=True).click()
        expect(page.get_by_text(re.compile(rf"Loaded {prompt_name} v1")).first).to_be_visible()
        expect(page.get_by_role("dialog")).to_have_count(0)
        expect(messages).to_have_count(3)
        assert [m.input_value() for m in messages.all()] == [
            SYSTEM_PROMPT,
            "バナナは何色？",
            "リンゴは？",
        ]
        roles = [
            b.inner_text().strip()
            for b in page.get_by_role("button", name="Change message role").all()
        ]
        assert roles == ["System", "User", "User"], roles

    with s.step(8, "the Playground's two calls are counted on the AI Gateway's usage page"):
        deadline = time.monotonic() + 30
        while (after := gateway_requests_shown(s, stack)) < before + 2:
            assert time.monotonic() < deadline, (
                f"usage page shows {after} requests, {before} before the chat"
            )
            page.wait_for_timeout(1000)
