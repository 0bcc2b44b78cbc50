"""The pack in a real browser: ComfyUI's own server and frontend, driven by headless Chromium.

What is checked, in one page session (the server takes a while to start on a CPU):
  1. the node search box finds the FIA nodes when "FIA" is typed,
  2. every bundled workflow is served as a template and loads with no missing nodes,
  3. a queued workflow (tiny settings) puts its summary on the FIA nodes,
  4. the concepts box warns about empty and duplicate lines,
  5. the ScaPre example workflow, queued, shows on its ScaPre nodes the edit they made (checked
     against the edit file its save node wrote) and the canvas draws every line of it.
Screenshots go to the pytest tmp dir; the last of steps 4 and 5 are also copied to tests/e2e/screenshots/.

Needs COMFYUI_PATH, /usr/bin/chromium, /usr/bin/chromedriver and selenium (see README.md here);
skips with the reason when one is missing. The server listens on 127.0.0.1 only, with a
temporary --base-directory where the repository is linked in as custom_nodes/forget-it-all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACK_NAME = "forget-it-all"
FIA_NODES = [
    "FIAConceptSaliencyCollector",
    "FIANeuronLocalizer",
    "FIAAgnosticFusion",
    "FIAApplyMask",
    "FIASaveMask",
    "FIALoadMask",
    "FIAMaskReport",
    "FIAScaPreErase",
    "FIAApplyScaPreEdit",
    "FIASaveScaPreEdit",
    "FIALoadScaPreEdit",
]
SERVER_START_S = 240
EXPLICIT = "FIA 3 Forget explicit content"
SCAPRE = "FIA 6 ScaPre erase ten objects in seconds"
RUN_S = 480


def comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        pytest.skip("COMFYUI_PATH is not set (see tests/e2e/README.md)")
    path = Path(raw).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={raw} has no main.py")
    return path


def checkpoint_cache() -> Path:
    return Path(os.environ.get("FIA_TEST_CACHE", Path.home() / ".cache" / "fia-tests"))


def random_sd15(comfy: Path) -> Path:
    """The random SD 1.5 checkpoint of the integration tests, made in a child process if not cached."""
    path = checkpoint_cache() / "sd15-random-s0.safetensors"
    if not path.is_file():
        code = (
            "import sys, tempfile; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "import comfy_host, comfy_checkpoints; comfy_host.boot(Path(tempfile.mkdtemp()));"
            "comfy_checkpoints.random_checkpoint('sd15', Path(sys.argv[2]), 0)"
        )
        env = {**os.environ, "COMFYUI_PATH": str(comfy)}
        subprocess.run(
            [sys.executable, "-c", code, str(REPO_ROOT / "tests" / "integration"), str(path.parent)],
            env=env,
            check=True,
            timeout=600,
        )
    return path


# ComfyUI's UpscaleModelLoader needs torchvision (comfy_extras/nodes_upscale_model.py). Where it is
# absent, frontend 1.27's model-to-node store (registerDefaults) reads the missing node def and every
# CheckpointLoaderSimple then fails to construct in the page. This test-only pack, written into the
# temporary base directory, registers a placeholder under that name only when ComfyUI lacks the node.
STUB_PACK = """
import nodes


class PlaceholderUpscaleModelLoader:
    CATEGORY = "testing"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": ([],)}}

    def load(self, model_name):
        raise RuntimeError("placeholder: torchvision is missing")


NODE_CLASS_MAPPINGS = {}
if "UpscaleModelLoader" not in nodes.NODE_CLASS_MAPPINGS:
    NODE_CLASS_MAPPINGS["UpscaleModelLoader"] = PlaceholderUpscaleModelLoader
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """ComfyUI's real server on 127.0.0.1 with the pack installed; stopped on teardown."""
    comfy = comfyui_path()
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("chromium or chromedriver missing: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium")
    ckpt = random_sd15(comfy)

    base = tmp_path_factory.mktemp("comfy-server")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    stubs = base / "custom_nodes" / "fia_test_stubs"
    stubs.mkdir()
    (stubs / "__init__.py").write_text(STUB_PACK)
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / ckpt.name).symlink_to(ckpt)
    port = free_port()
    log = open(base / "server.log", "wb")
    command = [
        sys.executable,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--disable-auto-launch",
        "--database-url",
        "sqlite:///:memory:",
    ]
    process = subprocess.Popen(command, cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                get_json(f"{url}/system_stats", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer in {SERVER_START_S} s")
                time.sleep(1)
        # No first-run template browser over the canvas (a user setting, kept in the tmp base).
        # No minimap over the screenshots either.
        for setting, value in (("Comfy.TutorialCompleted", b"true"), ("Comfy.Minimap.Visible", b"false")):
            request = urllib.request.Request(f"{url}/settings/{setting}", data=value, method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        yield {"url": url, "base": base, "ckpt": ckpt.name, "log": base / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(RUN_S)
    try:
        driver.get(server["url"])
        wait_for(
            driver,
            "const types = window.LiteGraph?.registered_node_types ?? {};"
            "return !!(window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensions"
            "?.some(e => e.name === 'FIA.Summary') && types.FIAMaskReport && types.KSampler"
            " && types.CheckpointLoaderSimple)",
            180,
            "the app, the FIA extensions and the node types",
        )
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def wait_for(driver, script: str, timeout: float, what: str, *args):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


APP = "const app = window.comfyAPI.app.app;"


def load_workflow(driver, workflow: dict) -> dict:
    """Load through the app API; report node types the frontend does not know and open dialogs."""
    return driver.execute_async_script(
        APP
        + """
        const [workflow, done] = arguments;
        app.loadGraphData(workflow, true, true, "fia-test").then(() => {
            const types = app.graph.nodes.map(n => n.type);
            const dialogs = [...document.querySelectorAll('.p-dialog')].map(d => d.innerText);
            const errors = app.graph.nodes.filter(n => n.has_errors).map(n => n.type);
            const registered = window.LiteGraph?.registered_node_types ?? {};
            done({count: app.graph.nodes.length, types, errors, dialogs,
                  unknown: types.filter(t => !(t in registered))});
        }).catch(e => done({error: String(e)}));
    """,
        workflow,
    )


def test_fia_nodes_in_the_node_search(browser, screens):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.execute_script(APP + "app.graph.clear();")
    browser.save_screenshot(str(screens / "0_start.png"))
    canvas = browser.find_element(By.ID, "graph-canvas")
    box = None
    for _attempt in range(5):  # the canvas may not take the first double click while the page settles
        ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).double_click().perform()
        try:
            box = wait_for(
                browser,
                "return document.querySelector('.comfy-vue-node-search-container input')",
                4,
                "the node search box",
            )
            break
        except AssertionError:
            continue
    assert box is not None, "double-clicking the canvas did not open the node search box"
    box.send_keys("FIA")
    found = wait_for(
        browser,
        """
        const items = [...document.querySelectorAll('.p-autocomplete-option, .option-container')];
        const text = items.map(i => i.innerText).join('\\n');
        return text.includes('FIA Concept Saliency Collector') ? text : null;
    """,
        20,
        "FIA nodes in the search results",
    )
    browser.save_screenshot(str(screens / "1_node_search.png"))
    for title in ("FIA Concept Saliency Collector", "FIA Neuron Localizer", "FIA Agnostic Fusion"):
        assert title in found
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait_for(
        browser,
        "return !document.querySelector('.comfy-vue-node-search-container input')",
        10,
        "the search box to close",
    )


def test_bundled_workflows_load_with_no_missing_nodes(browser, server, screens):
    templates = get_json(f"{server['url']}/api/workflow_templates")
    names = sorted(templates.get(PACK_NAME, []))
    assert names == sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))
    for name in names:
        workflow = get_json(f"{server['url']}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.json")
        result = load_workflow(browser, workflow)
        assert "error" not in result, result
        assert result["count"] == len(workflow["nodes"]) and result["unknown"] == [], (name, result)
        # The only node flagged is the checkpoint loader: the example's model file is not on this server.
        assert set(result["errors"]) <= {"CheckpointLoaderSimple"}, (name, result)
        assert sorted(result["types"]) == sorted(n["type"] for n in workflow["nodes"])
        assert not [d for d in result["dialogs"] if "missing" in d.lower()], (name, result["dialogs"])
        # What the frontend would save has the same widget values as the file (widget order agrees).
        saved = browser.execute_script(APP + "return app.graph.serialize();")
        by_id = {n["id"]: n for n in saved["nodes"]}
        for node in workflow["nodes"]:
            assert by_id[node["id"]]["widgets_values"] == node["widgets_values"], (name, node["type"])
        # The frontend keeps every node at its size in the file (it enlarges a node too small for its widgets
        # and sockets), so that the layout check of the files, their sizes plus the summaries, is an upper bound.
        sizes = {n["id"]: n["size"] for n in saved["nodes"]}
        enlarged = [
            (n["id"], n["type"], n["size"], sizes[n["id"]]) for n in workflow["nodes"] if sizes[n["id"]] != n["size"]
        ]
        assert enlarged == [], (name, "[id, type, size in the file, size on the page]", enlarged)
    browser.save_screenshot(str(screens / "2_workflow_loaded.png"))


TINY = {
    "CheckpointLoaderSimple": {"ckpt_name": None},
    "FIAConceptSaliencyCollector": {"resolution": 64, "pairs": 2, "steps": 10, "saliency_steps": 2},
    "KSampler": {"steps": 2},
    "EmptyLatentImage": {"width": 64, "height": 64},
}


def queue_tiny(driver, server, name: str, extra: dict | None = None) -> dict:
    """Load workflows/<name>.json on the server's random checkpoint, set TINY (and ``extra``, by node type)
    and queue it; returns the file."""
    workflow = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
    for node in workflow["nodes"]:  # the example's model file is not on this server: pick the random one
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = [server["ckpt"]]
    assert load_workflow(driver, workflow)["unknown"] == []
    tiny = {**TINY, "CheckpointLoaderSimple": {"ckpt_name": server["ckpt"]}}
    for node_type, values in (extra or {}).items():
        tiny[node_type] = {**tiny.get(node_type, {}), **values}
    queued = driver.execute_async_script(
        APP
        + """
        const [tiny, done] = arguments;
        // Execution errors are collected so that a failed run fails the test at once, not at RUN_S.
        window.fiaRunErrors = [];
        if (!window.fiaRunListener) {
            window.fiaRunListener = ({ detail }) => window.fiaRunErrors.push(detail);
            window.comfyAPI.api.api.addEventListener("execution_error", window.fiaRunListener);
        }
        for (const node of app.graph.nodes) {
            for (const [name, value] of Object.entries(tiny[node.type] ?? {})) {
                const widget = node.widgets.find(w => w.name === name);
                if (!widget) {
                    done({error: `${node.type} has no widget ${name}: ${JSON.stringify(node.widgets?.map(w => [w.name, w.type, w.value]))} ${JSON.stringify(node.inputs)}`});
                    return;
                }
                widget.value = value;
            }
        }
        // app.queuePrompt's own result says nothing (false also when the server accepted the prompt):
        // read the server's answer to the POST /prompt it makes.
        const api = window.comfyAPI.api.api;
        const post = api.queuePrompt;
        const own = Object.prototype.hasOwnProperty.call(api, "queuePrompt");
        let answer = null;
        api.queuePrompt = async function (...args) {
            try {
                answer = await post.apply(this, args);
            } catch (e) {
                answer = {error: String(e), node_errors: e.response?.node_errors};
                throw e;
            }
            return answer;
        };
        app.queuePrompt(0, 1).catch(e => { answer ??= {error: String(e)}; }).finally(() => {
            if (own) api.queuePrompt = post;
            else delete api.queuePrompt;
            done(answer ?? {error: "no prompt was posted"});
        });
    """,
        tiny,
    )
    assert queued.get("prompt_id") and not queued.get("node_errors") and "error" not in queued, (name, queued)
    return workflow


def wait_for_summaries(driver, what: str) -> dict[int, dict]:
    """Wait until every FIA node of the graph shows a summary (payload and widget); {node id: payload}."""
    result = wait_for(
        driver,
        APP
        + """
        if (window.fiaRunErrors?.length) return {error: window.fiaRunErrors};
        const fia = app.graph.nodes.filter(n => n.type.startsWith('FIA'));
        const shown = fia.every(n => n.fiaSummary && n.widgets?.some(w => w.name === 'fia_summary'));
        return fia.length && shown ? {summaries: fia.map(n => [n.id, n.fiaSummary])} : null;
    """,
        RUN_S,
        f"a summary on every FIA node of {what} (see server.log)",
    )
    assert "error" not in result, result["error"]
    return {node_id: summary for node_id, summary in result["summaries"]}


def assert_summary_not_saved_or_sent(driver, workflow: dict, node_ids) -> None:
    """The summary widget is not saved with the workflow and not sent with a prompt."""
    saved = {n["id"]: n for n in driver.execute_script(APP + "return app.graph.serialize();")["nodes"]}
    prompt = driver.execute_async_script(APP + "app.graphToPrompt().then(p => arguments[0](p.output));")
    for node in workflow["nodes"]:
        if node["id"] in node_ids:
            assert saved[node["id"]]["widgets_values"] == node["widgets_values"], node["type"]
            assert "fia_summary" not in prompt[str(node["id"])]["inputs"], node["type"]


def keep_screenshot(driver, screens: Path, name: str, kept_as: str) -> Path:
    """Save screens/<name> with nothing selected and copy it to tests/e2e/screenshots/<kept_as>."""
    driver.execute_script(APP + "app.canvas.deselectAll(); app.canvas.setDirty(true, true);")
    time.sleep(1)  # one more frame for the canvas
    path = screens / name
    driver.save_screenshot(str(path))
    target = HERE / "screenshots"
    target.mkdir(exist_ok=True)
    shutil.copyfile(path, target / kept_as)
    return path


def test_summary_after_queue_and_concept_box_warnings(browser, server, screens):
    from selenium.webdriver.common.keys import Keys

    workflow = queue_tiny(browser, server, EXPLICIT)
    summaries = wait_for_summaries(browser, EXPLICIT)
    fusion = next(n["id"] for n in workflow["nodes"] if n["type"] == "FIAAgnosticFusion")
    summary = summaries[fusion]
    assert summary["concepts"] == ["nude", "naked"] and summary["pruned_percent"] > 0
    assert len(summary["layers"]) == 16 and summary["alpha"] == 0.6
    fia_nodes = {n["id"]: n["type"] for n in workflow["nodes"] if n["type"].startswith("FIA")}
    assert summaries.keys() == fia_nodes.keys()
    for node_id, node_type in fia_nodes.items():
        assert summaries[node_id]["concepts"] == ["nude", "naked"], node_type
    assert_summary_not_saved_or_sent(browser, workflow, [fusion])

    # The concepts box: type a duplicate (other case) and an empty line into the real textarea.
    collector = next(n["id"] for n in workflow["nodes"] if n["type"] == "FIAConceptSaliencyCollector")
    assert (
        browser.execute_script(APP + "return app.graph.getNodeById(arguments[0]).fiaConceptWarnings;", collector) == []
    )
    area = browser.execute_script(
        APP
        + """
        const node = app.graph.getNodeById(arguments[0]);
        return node.widgets.find(w => w.name === 'concepts').inputEl;
    """,
        collector,
    )
    localizer = next(n["id"] for n in workflow["nodes"] if n["type"] == "FIANeuronLocalizer")
    show_nodes(browser, [collector, localizer, fusion])
    area.click()
    area.send_keys(Keys.END, Keys.ENTER, Keys.ENTER, "Nude")
    warnings = wait_for(
        browser,
        APP
        + """
        const node = app.graph.getNodeById(arguments[0]);
        return node.fiaConceptWarnings?.length === 2 ? node.fiaConceptWarnings : null;
    """,
        10,
        "two concept warnings",
        collector,
    )
    assert warnings[0] == "empty line 3"
    assert warnings[1].startswith('duplicate: "Nude" (lines 1 and 4)')
    title = browser.execute_script(APP + "return app.graph.getNodeById(arguments[0]).getTitle();", collector)
    assert title.endswith("⚠ 2 concept warnings")
    outline = browser.execute_script("return arguments[0].style.outline;", area)
    assert "solid" in outline
    keep_screenshot(browser, screens, "3_summary_and_warnings.png", "fia_browser.png")

    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    assert wait_for(
        browser,
        APP
        + """
        const w = app.graph.getNodeById(arguments[0]).fiaConceptWarnings;
        return w?.length === 1 ? w : null;
    """,
        10,
        "the no-concept warning",
        collector,
    )[0].startswith("no concept given")


def show_nodes(driver, ids) -> None:
    """Fit the canvas view around the given nodes (and their drawn warnings above them)."""
    driver.execute_script(
        APP
        + """
        const nodes = arguments[0].map(id => app.graph.getNodeById(id));
        const x0 = Math.min(...nodes.map(n => n.pos[0])) - 20;
        const y0 = Math.min(...nodes.map(n => n.pos[1])) - 90;
        const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + 20;
        const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + 20;
        const canvas = app.canvas.canvas;
        const scale = Math.min(canvas.clientWidth / (x1 - x0), canvas.clientHeight / (y1 - y0), 1.0);
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [-x0 + (canvas.clientWidth / scale - (x1 - x0)) / 2, -y0];
        app.canvas.setDirty(true, true);
    """,
        ids,
    )


# SD 1.5's 16 cross-attention layers: their output widths (down 2x320, 2x640, 2x1280; mid 1280; up 3x1280,
# 3x640, 3x320). Each has a to_k and a to_v from the 768-wide text embedding: 32 projections in float32.
SD15_CROSS_ATTENTION_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280] + [1280] * 3 + [640] * 3 + [320] * 3
SD15_DENSE_BYTES = 2 * sum(SD15_CROSS_ATTENTION_WIDTHS) * 768 * 4


def drawn_summary_texts(driver, node_ids) -> dict[int, list[str]]:
    """The texts each node's summary widget draws in one frame (the nodes are brought into view first)."""
    show_nodes(driver, node_ids)
    pairs = driver.execute_script(
        APP
        + """
        const texts = new Map();
        const restore = [];
        for (const id of arguments[0]) {
            const widget = app.graph.getNodeById(id).widgets.find(w => w.name === 'fia_summary');
            const draw = widget.draw;
            texts.set(id, []);
            widget.draw = function (ctx, ...rest) {
                const own = Object.prototype.hasOwnProperty.call(ctx, 'fillText');
                const fillText = ctx.fillText;
                ctx.fillText = function (text, ...args) {
                    texts.get(id).push(String(text));
                    return fillText.call(this, text, ...args);
                };
                try {
                    return draw.call(this, ctx, ...rest);
                } finally {
                    if (own) ctx.fillText = fillText;
                    else delete ctx.fillText;
                }
            };
            restore.push(() => { widget.draw = draw; });
        }
        try {
            app.canvas.draw(true, true);
        } finally {
            restore.forEach(r => r());
        }
        return [...texts.entries()];
    """,
        list(node_ids),
    )
    return {node_id: texts for node_id, texts in pairs}


def test_scapre_summary_after_queue(browser, server, screens):
    from fia_engine.scapre import ScaPreEdit

    workflow = queue_tiny(browser, server, SCAPRE)
    summaries = wait_for_summaries(browser, SCAPRE)
    by_type = {n["type"]: n["id"] for n in workflow["nodes"]}
    erase, save = by_type["FIAScaPreErase"], by_type["FIASaveScaPreEdit"]
    assert summaries.keys() == {erase, save}
    widgets = browser.execute_script(
        APP
        + """
        const widgets = app.graph.getNodeById(arguments[0]).widgets;
        return Object.fromEntries(widgets.filter(w => w.name !== 'fia_summary').map(w => [w.name, w.value]));
    """,
        erase,
    )
    concepts = [line.strip() for line in widgets["concepts"].splitlines() if line.strip()]
    assert len(concepts) == 10 and widgets["anchor"] == "" and widgets["mode"] == "scapre"
    made, saved = summaries[erase], summaries[save]
    save_name = browser.execute_script(
        APP + "return app.graph.getNodeById(arguments[0]).widgets.find(w => w.name === 'name').value;", save
    )
    assert saved["saved_as"] == f"{save_name}.safetensors"
    # The edit the save node wrote, read back here by the engine: what the nodes really computed.
    edit = ScaPreEdit.load(server["base"] / "models" / "fia_masks" / saved["saved_as"])
    expected = edit.summary()
    assert sorted(set(edit.shapes.values())) == sorted({(w, 768) for w in SD15_CROSS_ATTENTION_WIDTHS})
    for summary in (made, saved):
        assert summary["method"] == "ScaPre" and summary["layer_metric"] == "change"
        assert summary["concepts"] == concepts == expected["concepts"]
        assert summary["anchor"] == "" and summary["preserve"] == [] and summary["mode"] == "scapre"
        assert summary["family"] == "SD1.x" == edit.family
        names = [name for name, _ in summary["layers"]]
        assert summary["layer_count"] == len(names) == 32 == len(edit.layers)
        assert sum(n.endswith(".to_k") for n in names) == 16 and sum(n.endswith(".to_v") for n in names) == 16
        assert summary["dense_bytes"] == SD15_DENSE_BYTES == expected["dense_bytes"]
        assert 0 < summary["stored_bytes"] == expected["stored_bytes"] < summary["dense_bytes"]
        assert 0 < summary["edited_rows_percent"] <= 100
        assert summary["edited_rows_percent"] == pytest.approx(100 * expected["edited_fraction"], abs=1e-3)
        changes = dict(summary["layers"])
        assert all(change > 0 for change in changes.values()), changes
        assert changes == pytest.approx(
            {name: 100 * layer["relative_change"] for name, layer in expected["layers"].items()}, abs=1e-3
        )
    assert made["scale"] == widgets["scale"] == 1.0 and "scale" not in saved and "saved_as" not in made
    assert_summary_not_saved_or_sent(browser, workflow, [erase, save])

    # What the canvas draws: every line of the payload, not only the payload on the node.
    drawn = drawn_summary_texts(browser, [erase, save])
    for texts in (drawn[erase], drawn[save]):
        assert any(t.startswith(f"Concepts (10): {concepts[0]}, {concepts[1]}") for t in texts), texts
        assert "Mapped onto the empty prompt" in texts, texts
        assert any(t.startswith("32 projections  ·  ") and "of rows edited" in t for t in texts), texts
        assert any(t.startswith("Stored ") and t.endswith(" of a dense 76.7 MB)") for t in texts), texts
        assert "scapre  ·  SD1.x" in texts, texts
        assert any(t.startswith("32 layers · max ") and " change in " in t for t in texts), texts
    assert any(t.endswith("  ·  scale 1") for t in drawn[erase]), drawn[erase]
    assert f"Saved as {saved['saved_as']}" in drawn[save], drawn[save]
    show_nodes(browser, [erase])  # the two nodes only fit together at a zoom where the canvas drops text
    keep_screenshot(browser, screens, "4_scapre_summary.png", "fia_scapre_browser.png")


# The layout check of workflows/src/layout.py, also run on the files by tests/unit/test_workflow_layout.py.
sys.path.insert(0, str(REPO_ROOT / "workflows" / "src"))
import layout  # noqa: E402

# In name order: "FIA 4 ..." saves the mask that "FIA 5 ..." loads.
WORKFLOW_NAMES = sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))


def fit_view(driver) -> list[float]:
    """Show the whole graph (nodes and groups) in the canvas, nothing selected; its box in page pixels."""
    box = driver.execute_script(
        APP
        + """
        const boxes = [...app.graph.nodes.map(n => [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]),
                       ...(app.graph.groups ?? app.graph._groups).map(g => [...g._bounding])];
        const x0 = Math.min(...boxes.map(b => b[0])) - 20, y0 = Math.min(...boxes.map(b => b[1])) - 20;
        const x1 = Math.max(...boxes.map(b => b[0] + b[2])) + 20, y1 = Math.max(...boxes.map(b => b[1] + b[3])) + 20;
        const canvas = app.canvas.canvas;
        const scale = Math.min(canvas.clientWidth / (x1 - x0), canvas.clientHeight / (y1 - y0));
        const offset = [-x0 + (canvas.clientWidth / scale - (x1 - x0)) / 2, -y0];
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = offset;
        app.canvas.deselectAll();
        app.canvas.setDirty(true, true);
        const page = canvas.getBoundingClientRect();
        const ratio = window.devicePixelRatio || 1;
        return [(page.left + (x0 + offset[0]) * scale) * ratio, (page.top + (y0 + offset[1]) * scale) * ratio,
                (x1 - x0) * scale * ratio, (y1 - y0) * scale * ratio];
    """
    )
    time.sleep(1)  # one more frame for the canvas
    return box


def graph_screenshot(driver, path: Path) -> None:
    """A screenshot of the whole graph only (fit_view), without the app's menus and toolbars."""
    from PIL import Image

    box = fit_view(driver)
    driver.save_screenshot(str(path))
    with Image.open(path) as image:
        left, top = max(0, round(box[0])), max(0, round(box[1]))
        right, bottom = min(image.width, round(box[0] + box[2])), min(image.height, round(box[1] + box[3]))
        cropped = image.crop((left, top, right, bottom))
    cropped.save(path)


def graph_on_the_page(driver) -> tuple[dict, dict[str, float]]:
    """The graph as the page holds it (sizes as drawn now) and the measured width of each group title."""
    found = driver.execute_script(
        APP
        + """
        const ctx = document.createElement('canvas').getContext('2d');
        const widths = {};
        for (const group of app.graph.groups ?? app.graph._groups) {
            ctx.font = `${group.font_size}px ${window.LiteGraph.GROUP_FONT}`;
            widths[group.title] = ctx.measureText(group.title).width;
        }
        return {graph: app.graph.serialize(), widths};
    """
    )
    return found["graph"], found["widths"]


def wait_for_idle_queue(server, timeout: float = RUN_S) -> None:
    """Nothing running or pending on the server (a workflow loaded during a run would get its messages)."""
    deadline = time.monotonic() + timeout
    while True:
        queue = get_json(f"{server['url']}/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not empty in {timeout} s")
        time.sleep(0.5)


def test_bundled_workflows_overlap_nothing_after_a_run(browser, server, screens):
    """Each workflow, queued at tiny settings: with every summary drawn, no node covers another, none
    leaves its group, no group title runs past its group. One screenshot per workflow is kept."""
    from PIL import Image

    kept = HERE / "screenshots"
    kept.mkdir(exist_ok=True)
    found = {}
    # A window large enough that the whole graph shows above the zoom where LiteGraph stops drawing text.
    browser.set_window_size(2800, 1700)
    try:
        for i, name in enumerate(WORKFLOW_NAMES):
            found[name] = run_and_check(browser, server, screens, i, name)
            Image.open(screens / f"{name}.png").convert("RGB").save(kept / f"{name}.jpg", quality=75)
    finally:
        browser.set_window_size(1600, 1000)
    problems = [f"{name}: {p}" for name, (listed, _, _) in found.items() for p in listed]
    assert not problems, "\n".join(problems)
    # The summaries did grow the FIA nodes (else this test would check nothing the file does not show).
    for name, (_, grown, _) in found.items():
        assert max(grown.values()) > 100, (name, grown)
    # The unit test's estimate of a title's width is an upper bound of the width the browser measures.
    for name, (_, _, widths) in found.items():
        for title, width in widths.items():
            assert width <= layout.estimated_text_width(title, 22), (name, title, width)


def run_and_check(browser, server, screens: Path, i: int, name: str):
    """Queue one workflow at tiny settings; (layout problems, growth per node id, group title widths)."""
    wait_for_idle_queue(server)
    # As the template opens (workflows/src/thumbnails.py makes the template thumbnails from these).
    load_workflow(browser, json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8")))
    (screens / "loaded").mkdir(exist_ok=True)
    graph_screenshot(browser, screens / "loaded" / f"{name}.png")
    # Other seeds and scales than the tests above: ComfyUI would answer an identical prompt from its cache.
    extra = {"KSampler": {"seed": 1000 + i}, "FIAConceptSaliencyCollector": {"seed": 1000 + i}}
    extra["FIAScaPreErase"] = {"scale": 0.9}  # only set where the workflow has the node
    workflow = queue_tiny(browser, server, name, extra)
    wait_for_summaries(browser, name)
    wait_for_idle_queue(server)
    graph_screenshot(browser, screens / f"{name}.png")
    graph, widths = graph_on_the_page(browser)
    grown = {n["id"]: n["size"][1] - f["size"][1] for n, f in zip(graph["nodes"], workflow["nodes"], strict=True)}
    return layout.layout_problems(graph, grown=False, title_widths=widths), grown, widths


def test_template_browser_lists_the_workflows_in_order_with_thumbnails(browser, server, screens):
    """ComfyUI's template browser: this pack's workflows with their file names as titles, in order, each
    with its thumbnail (workflows/<name>.jpg) loaded."""
    # web/template_order.js sorts this pack's list whatever order the server's glob gives: here the server
    # answers with the list reversed, and another pack's list is passed through as it comes.
    reordered = browser.execute_async_script(
        """
        const [pack, done] = arguments;
        const api = window.comfyAPI.api.api;
        const fetchApi = api.fetchApi;
        api.fetchApi = async function (route, ...rest) {
            const response = await fetchApi.call(this, route, ...rest);
            if (route !== "/workflow_templates") return response;
            const listed = await response.json();
            listed[pack] = [...listed[pack]].reverse();
            listed["other-pack"] = ["b", "a"];
            return new Response(JSON.stringify(listed));
        };
        api.getWorkflowTemplates().then(done, e => done(String(e))).finally(() => { api.fetchApi = fetchApi; });
    """,
        PACK_NAME,
    )
    assert reordered[PACK_NAME] == WORKFLOW_NAMES and reordered["other-pack"] == ["b", "a"], reordered
    browser.execute_script(APP + "app.extensionManager.command.execute('Comfy.BrowseTemplates');")
    wait_for(browser, "return document.querySelector('.p-dialog .p-listbox-option')", 30, "the template browser")
    # The pack's own entry in the list of template sets.
    browser.execute_script(
        """
        const options = [...document.querySelectorAll('.p-dialog .p-listbox-option')];
        options.find(o => o.innerText.trim() === arguments[0])?.click();
    """,
        PACK_NAME,
    )
    cards = wait_for(
        browser,
        """
        const cards = [...document.querySelectorAll('.p-dialog [data-testid^="template-workflow-"]')];
        const shown = cards.map(card => {
            const img = card.querySelector('img');
            return [card.dataset.testid.slice('template-workflow-'.length), card.innerText,
                    img ? img.complete && img.naturalWidth : null];
        });
        const ready = shown.length === arguments[0] && shown.every(([, , width]) => width !== 0 && width !== false);
        return ready ? shown : null;
    """,
        60,
        "the pack's template cards and their thumbnails",
        len(WORKFLOW_NAMES),
    )
    time.sleep(1)
    shutil.copyfile(
        screens_shot(browser, screens, "5_template_browser.png"), HERE / "screenshots" / "template_browser.png"
    )
    assert [name for name, _, _ in cards] == WORKFLOW_NAMES, cards  # numbered: save a mask, then apply it
    for name, text, width in cards:
        assert name in text, (name, text)  # the file name is the card's title
        assert width and width > 0, (name, width)  # the thumbnail loaded: no grey placeholder
    browser.execute_script(
        "document.querySelector('.p-dialog button[aria-label=\"Close\"], .p-dialog-close-button')?.click();"
    )


def screens_shot(driver, screens: Path, name: str) -> Path:
    path = screens / name
    driver.save_screenshot(str(path))
    return path
