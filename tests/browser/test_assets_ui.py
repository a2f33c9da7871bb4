"""`dagster dev` on loopback: a run launched through GraphQL, and the asset graph in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import (
    BIN,
    REPO,
    TINY_DATA_CONFIG,
    TINY_RUN_CONFIG,
    default_signals,
    free_port,
    make_project,
    stop_process_group,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ASSETS = ("dataset_splits", "grn_checkpoint", "fmn_checkpoint", "query_descriptors", "gallery_descriptors",
          "evaluation_metrics", "onnx_model", "model_card", "deployed_model")
GROUPS = ("data", "training", "retrieval", "evaluation", "deployment")


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui")
    project, _ = make_project(folder)
    home = folder / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(project), "FMN_EXECUTOR": "in_process",
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    log = open(folder / "dagster-dev.log", "w")  # noqa: SIM115 -- closed below, after the server stops
    server = subprocess.Popen([str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
                               str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, preexec_fn=default_signals)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if graphql(url, "{ version }")["version"]:
                    break
            except OSError:
                pass
            assert server.poll() is None, (folder / "dagster-dev.log").read_text()[-3000:]
            assert time.time() < deadline, "dagster dev did not come up in 180 s"
            time.sleep(1)
        yield url, project, folder
    finally:
        stop_process_group(server)
        log.close()


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
METADATA = """
query Metadata($key: String!) {
  assetOrError(assetKey: {path: [$key]}) {
    ... on Asset {
      assetMaterializations(partitions: ["synthetic"], limit: 1) {
        runId
        metadataEntries {
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}"""


REPOSITORIES = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"


def launch(url: str, job: str, config: dict) -> str:
    """Launch ``job`` for the synthetic partition through GraphQL, wait for it to end; returns the run id."""
    repository = graphql(url, REPOSITORIES)["repositoriesOrError"]["nodes"][0]
    params = {"selector": {"repositoryLocationName": repository["location"]["name"],
                           "repositoryName": repository["name"], "jobName": job},
              "runConfigData": config,
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "synthetic"}]}}
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline, status = time.time() + 600, None
    while time.time() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", (job, status)
    return run_id


@pytest.fixture(scope="module")
def materialized(dagster_dev) -> str:
    """The graph materialised through GraphQL once, for every test of the module; returns the pipeline's run id."""
    url, _, _ = dagster_dev
    return launch(url, "fmn_pipeline", {"ops": {**TINY_DATA_CONFIG["ops"], **TINY_RUN_CONFIG["ops"]}})  # one run


def test_run_launched_through_graphql_succeeds_and_its_metadata_reads_back(dagster_dev, materialized):
    (url, project, _), run_id = dagster_dev, materialized
    materialization = graphql(url, METADATA, {"key": "evaluation_metrics"})["assetOrError"]["assetMaterializations"][0]
    assert materialization["runId"] == run_id
    entries = {e["label"]: e for e in materialization["metadataEntries"]}
    assert "| FMN + re-ranking |" in entries["results"]["mdStr"]
    card = graphql(url, METADATA, {"key": "model_card"})["assetOrError"]["assetMaterializations"][0]
    card_md = {e["label"]: e for e in card["metadataEntries"]}["model_card"]["mdStr"]
    assert card["runId"] == run_id and card_md.startswith("# Model card: FMN on `synthetic`")
    assert "data:image/png;base64," in entries["cmc_plot"]["mdStr"]
    assert 0 <= entries["fmn_rank1"]["floatValue"] <= 100
    assert (Path(project) / "artifacts" / "synthetic" / "metrics.json").is_file()


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("FMN_REQUIRE_BROWSER") != "1",
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def expand_all_groups(page, attempts: int = 4) -> None:
    """Open the graph's context menu and show every asset node. The newsletter dialog can open in the middle:
    dismissing it closes the menu as well, so the menu is opened again until the click lands."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        page.mouse.click(1200, 300, button="right")
        try:
            page.get_by_text("Expand all groups").last.click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def test_asset_graph_page_in_headless_chromium(dagster_dev, materialized):
    assert CHROMIUM, "FMN_REQUIRE_BROWSER=1 but no chromium on PATH"
    from playwright.sync_api import sync_playwright

    url, _, folder = dagster_dev
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # the first-visit newsletter dialog opens whenever its query returns, possibly in the middle of the
            # clicks below: Playwright dismisses it before any action it would block
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            page.goto(f"{url}/asset-groups", wait_until="networkidle", timeout=60_000)
            page.get_by_text("Global asset lineage").first.wait_for(timeout=60_000)
            for group in GROUPS:  # the stage groups of the graph
                page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
            expand_all_groups(page)
            for group in GROUPS:  # and the asset tree beside it
                page.get_by_text(group, exact=True).first.dblclick()
            for name in ASSETS:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(folder / "asset-graph.png"))
            assert page.get_by_text("dataset_splits", exact=True).count() >= 2  # a graph node and a tree entry
            # the model card on its asset page: the Markdown metadata opens as a rendered document
            page.goto(f"{url}/assets/model_card", wait_until="networkidle", timeout=60_000)
            page.get_by_text("[Show Markdown]").first.click(timeout=60_000)
            page.get_by_role("heading", name="Intended use and limits").wait_for(timeout=30_000)
            assert page.get_by_role("heading", name="Model card: FMN on synthetic").count() == 1
            page.wait_for_timeout(800)  # the dialog fades in
            page.screenshot(path=str(folder / "model-card.png"))
        finally:
            browser.close()


WEAKER = {"grn_checkpoint": {"config": {"overrides": {**TINY_RUN_CONFIG["ops"]["grn_checkpoint"]["config"]["overrides"],
                                                      "pretrained": "none", "stage1_epochs": 1, "stage1_lr": 1e-6}}},
          "fmn_checkpoint": {"config": {"overrides": {**TINY_RUN_CONFIG["ops"]["fmn_checkpoint"]["config"]["overrides"],
                                                      "stage2_lr": 1e-6}}}}


def test_the_promotion_decision_reads_in_the_browser(dagster_dev, materialized):
    """A weaker retraining is kept out; its asset page shows the decision and both models' scores side by side."""
    assert CHROMIUM, "FMN_REQUIRE_BROWSER=1 but no chromium on PATH"
    from playwright.sync_api import sync_playwright

    url, project, folder = dagster_dev
    launch(url, "fmn_pipeline", {"ops": {**TINY_DATA_CONFIG["ops"], **TINY_RUN_CONFIG["ops"], **WEAKER}})
    last = json.loads((Path(project) / "artifacts" / "synthetic" / "promotions.jsonl").read_text().splitlines()[-1])
    assert last["decision"] == "kept"
    row = last["comparison"][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            # the newest materialization's metadata: the decision as a document and the typed comparison table
            page.goto(f"{url}/assets/deployed_model?view=events", wait_until="networkidle", timeout=60_000)
            page.get_by_role("heading", name="Candidate kept").wait_for(timeout=60_000)
            assert page.get_by_text("worse than the deployed model by more than 0.5 points").count() >= 1
            assert page.get_by_role("cell", name=row["score"], exact=True).count() >= 2  # both tables
            assert page.get_by_role("cell", name=f"{row['champion']:.2f}", exact=True).count() >= 1  # Markdown
            assert page.get_by_role("cell", name=str(row["champion"]), exact=True).count() >= 1  # typed table
            assert page.get_by_role("columnheader", name="within_tolerance", exact=True).count() == 1  # typed
            page.wait_for_timeout(800)
            page.screenshot(path=str(folder / "promotion-decision.png"))
        finally:
            browser.close()
