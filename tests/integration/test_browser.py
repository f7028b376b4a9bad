"""The UIs in a real browser: Debian's headless Chromium driven by Playwright (no download).

- Prefect UI, against the session's real server with the `readmit-process` worker and
  `prefect deploy --all` applied (fixture `prefect_worker`), after a small training flow ran in
  this process against that server: the five deployments are listed, the monitoring deployment
  shows its cron schedule, the retraining deployment its drift trigger, and the runs page the
  completed training run.
- The bento's Swagger UI (BentoML serves it at `/` from its own static files): it renders with
  every request to the outside blocked and scores the example encounter through "Try it out".

Screenshots go to test-output/screenshots/ (gitignored) and are checked to show rendered pages.
Chromium comes from `bash deployments/local/install.sh` (CI runs it first); no skipping.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import stack_helpers as sh
from playwright.sync_api import expect
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit import data
from readmit.settings import Settings

pytestmark = pytest.mark.integration

DEPLOYMENTS = (
    "training",
    "monitoring",
    "retraining",
    "deployment",
    "simulation",
    "backup",
    "experiment",
    "promotion",
)


@pytest.fixture(scope="session")
def bento(full_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    with sh.shared_bento(full_frame, tmp_path_factory.mktemp("bento")) as served:
        yield served


def api_post(api: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, payload = sh.http_json(f"{api}/{path}", body or {})
    assert status == 200, payload
    return payload


def run_small_training(api: str, full_frame: pd.DataFrame, tmp_path: Path) -> Any:
    """The training flow, in this process, recorded by the real server; its final state."""
    from flows.training import training_flow

    csv = tmp_path / "encounters.csv"
    csv.write_bytes(data.to_csv_bytes(data.in_time_order(full_frame).iloc[:4000]))
    with temporary_settings({PREFECT_API_URL: api}):
        return training_flow(data_uri=str(csv), search_budget_s=3, return_state=True)


def test_prefect_ui_shows_deployments_schedule_trigger_and_completed_training(
    prefect_worker: Any, full_frame: pd.DataFrame, fresh_settings: Settings, tmp_path: Path
) -> None:
    assert prefect_worker.deployed, "prefect.yaml was not deployed"
    server = prefect_worker.server
    state = run_small_training(server.api_url, full_frame, tmp_path)
    assert state.is_completed(), state
    run_id = str(state.state_details.flow_run_id)
    ids = {d["name"]: d["id"] for d in api_post(server.api_url, "deployments/filter")}
    assert set(DEPLOYMENTS) <= set(ids), ids
    flows = {f["name"]: f["id"] for f in api_post(server.api_url, "flows/filter")}
    ui_settings = sh.http_json(f"{server.ui_url}/ui-settings")[1]
    assert ui_settings["api_url"] == server.api_url, "the UI would call another API"

    with sh.chromium_page(tmp_path / "chromium-profile") as (page, blocked):
        page.goto(server.ui_url)  # the neutral entry point: Prefect's default UI
        page.get_by_role("link", name="Deployments", exact=True).first.click()
        for name in DEPLOYMENTS:
            link = page.locator(f'a[href$="/deployments/deployment/{ids[name]}"]').first
            expect(link).to_have_text(name)
        sh.screenshot(page, "prefect-deployments")

        open_from_list(page, ids["monitoring"])
        expect(page.get_by_text("Schedules", exact=True)).to_be_visible()
        expect(page.get_by_text("Every 2 minutes", exact=True)).to_be_visible()  # */2 * * * *
        sh.screenshot(page, "prefect-deployment-monitoring")

        page.go_back()
        open_from_list(page, ids["retraining"])
        expect(page.get_by_text("Triggers", exact=True)).to_be_visible()
        expect(page.get_by_text("retrain-on-drift", exact=True)).to_be_visible()
        sh.screenshot(page, "prefect-deployment-retraining")

        page.goto(f"{server.ui_url}{ui_settings['v2_base_url']}/runs?flows={flows['training']}")
        run_link = page.locator(f'a[href$="/runs/flow-run/{run_id}"]').first
        expect(run_link).to_be_visible()
        # The run's own entry (the nearest ancestor holding one run link) says Completed.
        entry = run_link.locator(
            "xpath=ancestor::*[count(.//a[contains(@href, '/runs/flow-run/')]) = 1]"
            "[.//*[normalize-space(text()) = 'Completed']][1]"
        )
        expect(entry).to_be_visible()
        sh.screenshot(page, "prefect-flow-runs")
    record_blocked("prefect-ui", blocked)


def open_from_list(page: Any, deployment_id: str) -> None:
    """Click a deployment's link on the (rendered) deployments list and wait for its page.

    The SPA re-renders the list after `go_back`; a click on the first render can be lost, so
    the link must be visible first, and the navigation is awaited, not assumed.
    """
    link = page.locator(f'a[href$="/deployments/deployment/{deployment_id}"]').first
    expect(link).to_be_visible()
    link.click()
    page.wait_for_url(re.compile(rf"/deployments/deployment/{deployment_id}"))


def test_bento_swagger_ui_renders_offline_and_scores(bento: sh.ServedBento, tmp_path: Path):
    with sh.chromium_page(tmp_path / "chromium-profile") as (page, blocked):
        page.goto(f"{bento.url}/")
        paths = page.locator(".swagger-ui .opblock-summary-path")
        expect(paths.first).to_be_visible()
        shown = set(paths.all_inner_texts())
        assert {"/predict", "/predict_batch", "/model", "/readyz", "/livez", "/metrics"} <= shown
        sh.screenshot(page, "bento-swagger")

        operation = page.locator(".opblock-post").filter(
            has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/predict$"))
        )
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        response = operation.locator(".live-responses-table tbody tr.response").first
        expect(response.locator(".response-col_status")).to_have_text("200")
        body = json.loads(response.locator("pre.microlight").first.inner_text())
        assert 0 <= body["probability"] <= 1 and body["model_tag"] == bento.model_tag
        sh.screenshot(page, "bento-swagger-predict")
    assert not [u for u in blocked if "swagger" in u], f"Swagger assets from outside: {blocked}"
    record_blocked("bento-swagger", blocked)


def record_blocked(page_name: str, blocked: list[str]) -> None:
    """Keep the requests that tried to leave the machine next to the screenshots (analytics)."""
    hosts = sorted({re.sub(r"^\w+://([^/]+).*", r"\1", url) for url in blocked})
    sh.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (sh.SCREENSHOTS / f"{page_name}-blocked-hosts.json").write_text(json.dumps(hosts, indent=1))
