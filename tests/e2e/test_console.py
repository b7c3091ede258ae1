"""The web console in a real browser: Debian's Chromium driven by Playwright's Python API against the
real stack (``python -m stack up``: SmolLM2 chat, MiniLM embeddings, whisper-base speech-to-text) with
API keys on.

Shown: sign-in with the admin key (a wrong key is refused on the page); the overview lists every
replica with its recent p50/p95 latency and requests/s, and a killed worker turns unhealthy with the
reason; a pull of a real model folder from a local Hugging Face Hub (tests/helpers/hub.py, the stack's
model registry pointed at it) shows its job's progress reach 100 % and the model appear, and a revision
a worker serves is refused deletion while an unused one is deleted; the playground streams a real chat
answer, compares two texts by embeddings and transcribes espeak-ng speech; the Models page's Deployment
panel scales the embedding starter to two replicas through the running ``up``'s apply and back; a key
created in the page works with the ``openai`` SDK and gets 401 after it is revoked in the page; the usage page shows a
request just made, in its table and its charts; a user key sees the playground with its models only and
its own usage; ``/docs`` and ``/redoc`` render. While the tests browse, every request the browser makes
goes to the gateway: none to any other host.

Screenshots of each page go to the test's temporary folder, or to ``CONSOLE_SCREENSHOTS`` (the docs
use ``CONSOLE_SCREENSHOTS=docs/console``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from common.auth import new_secret
from stack.starters import STARTER_EMBEDDING, STARTER_LLM, STARTER_TRANSCRIPTION
from tests.helpers.hub import FolderHub, folder_hub
from tests.helpers.ports import free_ports
from tests.helpers.stack import RunningStack, start_stack

pytestmark = pytest.mark.e2e
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ADMIN_KEY = new_secret()
STEP_MS = 120_000  # one real chat answer or transcription on two shared CPU cores
PULLED = "acme/minilm-mirror"  # the hub serves the starter embedding model's real folder under this id


def admin(stack: RunningStack, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, f"{stack.gateway_url}{path}", headers=headers, timeout=30, trust_env=False, **kw)


@pytest.fixture(scope="module")
def hub(minilm_path: Path) -> Iterator[FolderHub]:
    with folder_hub(PULLED, minilm_path) as served:
        yield served


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path, minilm_path: Path,
          whisper_path: Path, hub: FolderHub) -> Iterator[RunningStack]:
    """``python -m stack up`` with keys on, its key file and usage log in a temporary folder, its model
    registry pulling from the local hub (workers load from the store, offline whatever this says) into a
    store of its own (the starters are imported into it: a few seconds), so no earlier run's models or
    jobs show."""
    home = tmp_path_factory.mktemp("console-stack")
    env = {"MODEL_SERVICE_AUTH": "true", "MODEL_SERVICE_ADMIN_KEY": ADMIN_KEY,
           "MODEL_SERVICE_SERVICE_TOKEN": new_secret(), "GATEWAY_KEYS_FILE": str(home / "keys.json"),
           "GATEWAY_USAGE_LOG": str(home / "usage.log"), "MODEL_REGISTRY_HF_ENDPOINT": hub.url,
           "HF_HUB_OFFLINE": "0", "HF_HOME": str(home / "hf"), "MODEL_REGISTRY_LOCAL_ROOT": str(home / "store")}
    running = start_stack(home, env=env, api_key=ADMIN_KEY)
    try:
        yield running
    finally:
        running.stop()


class Browser:
    """One Chromium for the module; every request it makes is recorded to prove it stays on the gateway."""

    def __init__(self, browser: Any, gateway: str, shots: Path) -> None:
        self.browser, self.gateway, self.shots = browser, gateway, shots
        self.requests: list[str] = []

    def page(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.on("request", lambda request: self.requests.append(request.url))
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    def foreign(self) -> list[str]:
        own = (f"{self.gateway}/", f"blob:{self.gateway}/", "data:")
        return [url for url in self.requests if not url.startswith(own)]

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def chromium(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (run scripts/ci-deps.sh)")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield Browser(browser, stack.gateway_url, shots)
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """Each test ends by checking that the browser has stayed on the gateway so far."""
    yield chromium
    assert chromium.requests, "no request was recorded: the count proves nothing"
    assert chromium.foreign() == [], f"the browser left the gateway: {chromium.foreign()}"


def signed_in(browser: Browser, page_name: str = "overview") -> Any:
    page = browser.page()
    page.goto(f"{browser.gateway}/")
    page.fill("#sign-in-key", ADMIN_KEY)
    page.click("#sign-in-form button")
    page.wait_for_selector("#who:has-text('admin key')")
    page.goto(f"{browser.gateway}/ui/#{page_name}")
    return page


def test_sign_in_then_the_overview_lists_every_replica(stack: RunningStack, browser: Browser) -> None:
    page = browser.page()
    page.goto(f"{browser.gateway}/")
    assert page.url == f"{browser.gateway}/ui/"
    assert page.is_visible("#sign-in") and not page.is_visible("#nav")
    page.fill("#sign-in-key", "msp-" + "wrong" * 8)
    page.click("#sign-in-form button")
    page.wait_for_selector("#sign-in-error:has-text('not accepted')")
    page.fill("#sign-in-key", ADMIN_KEY)
    page.click("#sign-in-form button")
    page.wait_for_selector("#who:has-text('admin key')")
    assert page.evaluate("Object.keys(sessionStorage)") == ["model-service-key"]
    replicas = admin(stack, "GET", "/services").json()["data"]
    assert {r["model"] for r in replicas} >= {STARTER_LLM.model_id, STARTER_EMBEDDING.model_id,
                                              STARTER_TRANSCRIPTION.model_id}
    page.wait_for_selector("#replicas table")
    rows = page.locator("#replicas tbody tr")
    assert rows.count() == len(replicas)
    table = page.inner_text("#replicas")
    for replica in replicas:
        assert replica["url"] in table and replica["model"] in table
    assert table.count("healthy") == len(replicas)
    headers = page.locator("#replicas th").all_inner_texts()
    assert {"p50 ms", "p95 ms", "req/s", "in flight", "circuit"} <= set(headers)
    gpus = page.inner_text("#gpus")
    assert "no GPU" in gpus or "GPU 0" in gpus, gpus
    browser.shot(page, "overview")


def test_the_models_page_pulls_from_the_hub_with_progress_and_guards_served_revisions(
        stack: RunningStack, browser: Browser, hub: FolderHub) -> None:
    page = signed_in(browser, "models")
    page.wait_for_selector("#store-models table")
    listed = page.inner_text("#store-models")
    for starter in (STARTER_LLM, STARTER_EMBEDDING, STARTER_TRANSCRIPTION):
        assert starter.model_id in listed
    assert listed.count("ready") >= 3 and "current →" in listed
    # Every progress value the page shows for the pull, as the 2 s poll redraws the jobs table.
    page.evaluate("""() => { window.percents = []; new MutationObserver(() => document
        .querySelectorAll('#store-jobs [data-percent]').forEach((e) => window.percents.push(Number(e.dataset.percent))))
        .observe(document.getElementById('store-jobs'), {childList: true, subtree: true}); }""")
    page.fill("#pull-repo", PULLED)
    page.select_option("#pull-type", "embedding")
    page.click("#pull-start")
    page.wait_for_selector(f"#store-jobs tr:has-text('{PULLED}'):has-text('done') [data-percent='100']", timeout=60_000)
    assert page.evaluate("window.percents")[-1] == 100
    assert f"GET /api/models/{PULLED}/revision/main" in hub.requests  # pulled from the hub, not copied
    page.wait_for_selector(f"#store-models tr:has-text('{PULLED}'):has-text('ready')")
    pulled = admin(stack, "GET", "/admin/store").json()
    record = next(m for m in pulled["models"] if m["id"] == PULLED)
    assert record["size"] == hub.size and record["type"] == "embedding"
    browser.shot(page, "models")

    # A revision a worker serves is refused; the pulled one (served by none) is deleted.
    served = next(m for m in pulled["models"] if m["id"] == STARTER_EMBEDDING.model_id)
    row = f"#store-revisions tr:has-text('{STARTER_EMBEDDING.model_id}')"
    page.click(f"{row} button[data-delete='{served['current']}']")
    page.wait_for_selector("#store-error:has-text('in use')")
    page.click(f"#store-revisions tr:has-text('{PULLED}') button[data-delete='{record['current']}']")
    page.locator(f"#store-models tr:has-text('{PULLED}')").wait_for(state="detached")
    models = {m["id"] for m in admin(stack, "GET", "/admin/store").json()["models"]}
    assert PULLED not in models and STARTER_EMBEDDING.model_id in models


def apply_from_the_page(page: Any, model: str, replicas: int) -> str:
    """Scale ``model`` in the Deployment panel and wait for the apply to finish; its progress text."""
    page.fill(f"input[data-scale='{model}']", str(replicas))
    page.click(f"button[data-scale-apply='{model}']")
    page.wait_for_selector("#deploy-progress[data-done]", timeout=STEP_MS)
    progress = page.inner_text("#deploy-progress")
    assert page.get_attribute("#deploy-progress", "data-done") == "ok", progress
    page.wait_for_selector(f"#deploy-models tr:has-text('{model}'):has-text('{replicas} running')")
    return progress


def test_the_deployment_panel_scales_a_model_through_apply_and_back(stack: RunningStack, browser: Browser) -> None:
    """The cheapest model of the stack (the embedding starter) goes to two replicas from the page, rolled
    out by the running ``up``: the plan and progress show, the new replica serves and shows on the
    overview; then back to one, and it drains away."""
    name = STARTER_EMBEDDING.model_id
    page = signed_in(browser, "models")
    page.wait_for_selector(f"#deploy-models tr:has-text('{name}'):has-text('1 running')")
    running = page.input_value("#deploy-text")
    assert f"gateway: {stack.gateway_url.rsplit(':', 1)[1]}" in running  # what runs: up's flags included
    progress = apply_from_the_page(page, name, 2)
    assert f"start {name} replica 1 (new replica)" in progress and f"ready {name} replica 1" in progress
    assert progress.rstrip().endswith("Applied.")
    assert "replicas: 2" in page.input_value("#deploy-text")
    browser.shot(page, "models-deployment")

    urls = [r["url"] for r in admin(stack, "GET", "/services").json()["data"] if r["model"] == name]
    assert len(urls) == 2 and stack.embedding_url in urls
    added = next(url for url in urls if url != stack.embedding_url)
    overview = signed_in(browser, "overview")
    overview.locator(f"#replicas tr:has-text('{added}'):has-text('{name}') span.ok:text('healthy')").wait_for()
    with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=60) as client:
        assert len(client.embeddings.create(model=name, input=["a", "b", "c"]).data) == 3

    progress = apply_from_the_page(page, name, 1)
    assert f"stop {name} replica 1 (not in the file)" in progress and progress.rstrip().endswith("Applied.")
    overview.locator(f"#replicas tr:has-text('{added}')").wait_for(state="detached")
    assert [r["url"] for r in admin(stack, "GET", "/services").json()["data"] if r["model"] == name] \
        == [stack.embedding_url]


def test_playground_streams_a_real_chat_answer_and_runs_the_other_modalities(
        stack: RunningStack, browser: Browser, speech_wav: Path) -> None:
    page = signed_in(browser, "playground")
    page.select_option("#chat-model", STARTER_LLM.model_id)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "24")
    page.fill("#chat-prompt", "What is the capital of France?")
    # Count how often the answer changes: a streamed answer grows in several steps, not in one.
    page.evaluate("""() => { window.answerSteps = 0; new MutationObserver(() => window.answerSteps++)
        .observe(document.getElementById('chat-answer'), {childList: true, characterData: true, subtree: true}); }""")
    page.click("#chat-send")
    page.wait_for_selector("#chat-stats:has-text('tokens')", timeout=STEP_MS)
    assert "Paris" in page.inner_text("#chat-answer")
    assert page.evaluate("window.answerSteps") >= 3
    assert "/v1/chat/completions" in page.inner_text("pre.curl")
    sdk = page.inner_text("pre.sdk")
    assert "client.chat.completions.create" in sdk and f'"{STARTER_LLM.model_id}"' in sdk
    browser.shot(page, "playground")

    page.click("button[data-tab=embeddings]")
    page.click("#embed-send")
    page.wait_for_selector("#embed-result:has-text('cosine similarity')", timeout=STEP_MS)
    similarity = float(page.inner_text("#embed-result").split(":")[1].split()[0])
    assert 0.3 < similarity <= 1.0 and "384 dimensions" in page.inner_text("#embed-result")

    page.click("button[data-tab=speech]")
    page.set_input_files("#stt-file", str(speech_wav))
    page.click("#stt-send")
    page.wait_for_selector("#stt-result[data-done]", timeout=STEP_MS)
    text = page.inner_text("#stt-result").lower()
    assert "quick" in text and "fox" in text, text
    assert "client.audio.transcriptions.create" in page.inner_text("pre.sdk")


def test_a_key_made_in_the_page_works_until_revoked_in_the_page(stack: RunningStack, browser: Browser) -> None:
    page = signed_in(browser, "keys")
    page.fill("#key-name", "console-made")
    page.fill("#key-models", STARTER_LLM.model_id)
    page.fill("#key-rpm", "100")
    page.fill("#key-tpm", "100000")
    page.click("#key-create")
    secret = page.inner_text("#key-secret").strip()
    listed = {k["name"]: k for k in admin(stack, "GET", "/admin/keys").json()["data"]}
    made = listed["console-made"]
    assert made["models"] == [STARTER_LLM.model_id] and made["rpm"] == 100 and made["tpm"] == 100000
    browser.shot(page, "keys")
    with openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=secret, max_retries=0, timeout=120) as client:
        answer = client.chat.completions.create(model=STARTER_LLM.model_id, max_tokens=4,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        page.click(f"button[data-revoke={made['id']}]")
        page.wait_for_selector(f"#key-list tr:has-text('{made['id']}') :text('revoked')")
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model=STARTER_LLM.model_id, max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 401


def test_the_usage_page_shows_a_request_just_made(stack: RunningStack, browser: Browser) -> None:
    key = admin(stack, "POST", "/admin/keys", json={"name": "usage-probe"}).json()
    with openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key["key"], max_retries=0, timeout=120) as client:
        client.embeddings.create(model=STARTER_EMBEDDING.model_id, input="usage shows this")
    page = signed_in(browser, "usage")
    page.wait_for_selector("#usage-recent table")
    newest = page.locator("#usage-recent tbody tr").first.inner_text()
    assert key["id"] in newest and STARTER_EMBEDDING.model_id in newest and "/v1/embeddings" in newest
    assert key["id"] in page.inner_text("main")  # its by-key row too
    assert page.locator("#usage-model-chart rect").count() >= 1
    page.select_option("#usage-group", "by_key")
    page.wait_for_selector(f"#usage-series .legend:has-text('{key['id']}')")
    assert page.locator("#usage-series-chart circle").count() >= 1
    browser.shot(page, "usage")


def test_a_user_key_sees_the_playground_with_its_models_only_and_its_own_usage(
        stack: RunningStack, browser: Browser) -> None:
    key = admin(stack, "POST", "/admin/keys", json={"name": "chat-only", "models": [STARTER_LLM.model_id]}).json()
    with openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key["key"], max_retries=0, timeout=120) as client:
        client.chat.completions.create(model=STARTER_LLM.model_id, max_tokens=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    page = browser.page()
    page.goto(f"{browser.gateway}/ui/#overview")
    page.fill("#sign-in-key", key["key"])
    page.click("#sign-in-form button")
    page.wait_for_selector("#who:has-text('user key')")
    page.wait_for_selector("#chat-model")
    assert page.is_visible("a[data-page=playground]") and page.is_visible("a[data-page=usage]")
    for admin_page in ("overview", "models", "keys"):
        assert not page.is_visible(f"a[data-page={admin_page}]")
    options = page.locator("#chat-model option").all_inner_texts()
    assert options == [STARTER_LLM.model_id]
    page.click("button[data-tab=embeddings]")
    assert "no embedding model" in page.locator("#embed-model option").first.inner_text()
    page.click("a[data-page=usage]")
    page.wait_for_selector("#usage-recent table")
    assert f"Your key {key['id']}:" in page.inner_text("#usage-totals")
    assert "/v1/chat/completions" in page.inner_text("#usage-recent")
    keys_shown = set(page.locator("#usage-recent tbody tr td:nth-child(2)").all_inner_texts())
    assert keys_shown == {key["id"]}  # only its own lines, though others' requests are in the log
    browser.shot(page, "usage-user")


def test_api_docs_render_offline(stack: RunningStack, browser: Browser) -> None:
    page = browser.page()
    page.goto(f"{browser.gateway}/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".swagger-ui .opblock").count() >= 10
    assert "/v1/chat/completions" in page.inner_text(".swagger-ui")
    browser.shot(page, "docs")
    page.goto(f"{browser.gateway}/redoc")
    page.wait_for_selector("h1:has-text('Model Service Gateway')")
    assert page.locator("[data-section-id^='operation/']").count() >= 10


@contextmanager
def fake_worker(stack: RunningStack, model: str, model_type: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A fake-engine worker (the package's own, selected by a flag) that joins the stack's registry."""
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "stack", "worker", "--port", str(port), "--engine", "fake", "--model-name",
            model, "--model-type", model_type, "--registry-url", stack.registry_url, "--log-level", "warning"]
    with open(stack.log_path.parent / f"{model}.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=stack.env)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:  # SIGTERM: it deregisters, so no stale record holds its port's URL
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=10)


def routed(stack: RunningStack, *models: str) -> None:
    """Wait (bounded) until the gateway routes to a healthy replica of each of ``models``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        healthy = {r["model"] for r in admin(stack, "GET", "/services").json()["data"] if r["healthy"]}
        if set(models) <= healthy:
            return
        time.sleep(0.5)
    pytest.fail(f"the gateway never routed to {models}")


def test_playground_vision_and_rerank_send_what_the_code_shows(
        stack: RunningStack, browser: Browser, tmp_path: Path) -> None:
    """Against fake-engine workers (no vision or rerank model ships on PyPI): the fake multimodal model
    names each image it decoded with its size, the fake reranker scores by shared words."""
    from PIL import Image

    picture = tmp_path / "cat.png"
    Image.new("RGB", (64, 48), "orange").save(picture)
    with fake_worker(stack, "console-vision", "multimodal"), fake_worker(stack, "console-rerank", "rerank"):
        routed(stack, "console-vision", "console-rerank")
        page = signed_in(browser, "playground")
        page.click("button[data-tab=vision]")
        page.set_input_files("#vision-file", str(picture))
        page.fill("#vision-prompt", "Describe")
        page.click("#vision-send")
        page.wait_for_selector("#vision-stats:has-text('tokens')", timeout=STEP_MS)
        assert "[image 64x48]" in page.inner_text("#vision-answer")  # the data: URL arrived as a 64x48 image
        curl, sdk = page.inner_text("pre.curl"), page.inner_text("pre.sdk")
        assert '"type": "image_url"' in curl and "$(base64 -w0 cat.png)" in curl
        assert "base64.b64encode" in sdk and '"url": image_url' in sdk
        browser.shot(page, "playground-vision")

        page.click("button[data-tab=rerank]")
        page.fill("#rerank-query", "cats sleep")
        page.fill("#rerank-documents", "Stocks closed higher.\nCats sleep all day.")
        page.click("#rerank-send")
        page.wait_for_selector("#rerank-result[data-done]", timeout=STEP_MS)
        assert page.locator("#rerank-result li").first.inner_text().endswith("Cats sleep all day.")
        assert 'client.post("/rerank"' in page.inner_text("pre.sdk")


def test_a_killed_worker_shows_unhealthy_on_the_overview(stack: RunningStack, browser: Browser) -> None:
    """A fake-engine worker joins the stack's registry, shows healthy, is killed, and shows unhealthy
    with the reason (well within the registry's heartbeat expiry, which would drop it later)."""
    with fake_worker(stack, "console-extra", "llm") as (extra, url):
        page = signed_in(browser, "overview")
        row = page.locator(f"#replicas tr:has-text('{url}'):has-text('console-extra')")
        row.locator("span.ok:text('healthy')").wait_for(timeout=60_000)
        extra.kill()
        extra.wait(timeout=10)
        row.locator("span.bad:text('unhealthy')").wait_for(timeout=30_000)
        assert "unhealthy: " in row.inner_text() and len(row.inner_text().split("unhealthy: ")[1].strip()) > 3
        browser.shot(page, "overview-unhealthy")
