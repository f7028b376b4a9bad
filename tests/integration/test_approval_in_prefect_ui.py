"""Human approval of a promotion on the real Prefect server.

The approval step of the retraining flow (`flows.approval.request_approval`) runs in a small
flow of its own here, in a thread of this process, recorded by the session's real server:

- a person opens the paused run in the Prefect UI (headless Chromium), fills in the typed form
  (decision, reviewer, rationale) under the champion-against-challenger comparison, and
  presses Resume: the flow gets their answer and records it;
- the same form answered from code (`resume_flow_run`), rejecting;
- nobody answers: the timeout means the challenger is not promoted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stack_helpers as sh
from playwright.sync_api import expect
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit.model import approval
from readmit.model.gates import GateResult
from readmit.settings import get_settings

pytestmark = pytest.mark.integration


class _Eval:
    """What `approval.review_packet` reads of an `evaluate.Evaluation`."""

    def __init__(self, auc: float) -> None:
        self.auc, self.calibration = auc, {"ece": 0.012}

    def headline(self) -> dict[str, float]:
        return {"roc_auc": self.auc, "brier": 0.091, "ece": 0.012}

    def subgroup_rows(self) -> list[dict[str, Any]]:
        return [{"attribute": "age", "group": "[80-90)", "n": 410, "roc_auc": 0.612}]


def _packet() -> approval.ReviewPacket:
    gate = GateResult(True, ["challenger AUC 0.690 >= champion 0.680"], [], 0.68, 0.69)
    return approval.review_packet(
        "readmission:challenger", "readmission:champion", gate, _Eval(0.69), _Eval(0.68),
        ("a" * 64, "b" * 64),
    )  # fmt: skip


@flow(name="promotion-review")
def review_flow(packet: dict[str, Any]) -> dict[str, Any]:
    """The retraining flow's approval step, alone."""
    from flows.approval import request_approval

    return request_approval(approval.ReviewPacket(**packet), get_settings()).to_dict()


@pytest.fixture
def required_approval(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("READMIT_APPROVAL", "required")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class Running:
    """The review flow running in a thread; its final state once done."""

    def __init__(self, api_url: str, name: str) -> None:
        self.state: Any = None
        self.api_url, self.name = api_url, name
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            self.state = review_flow.with_options(flow_run_name=self.name)(
                _packet().to_dict(), return_state=True
            )

    def wait_paused(self, timeout_s: float = 120) -> Any:
        """The flow run, once paused on its form."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = asyncio.run(_runs(self.api_url, self.name))
            if runs and runs[0].state and runs[0].state.is_paused():
                return runs[0]
            time.sleep(1)
        raise AssertionError(f"flow run {self.name} never paused")

    def result(self, timeout_s: float = 120) -> Any:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the review flow did not finish"
        return self.state


async def _runs(api_url: str, name: str) -> list[Any]:
    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )


def test_a_person_approves_in_the_prefect_ui(
    prefect_server: Any, required_approval: None, tmp_path: Path
) -> None:
    running = Running(prefect_server.api_url, f"review-ui-{time.time_ns()}")
    run = running.wait_paused()
    with sh.chromium_page(tmp_path / "chromium-profile") as (page, blocked):
        page.goto(f"{prefect_server.ui_url}/runs/flow-run/{run.id}")
        page.get_by_role("button", name="Resume").first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("readmission:challenger")  # the comparison is shown
        expect(dialog).to_contain_text("0.6900")
        field = dialog.locator(".schema-form-property")  # the typed form Prefect draws
        field.filter(has_text="Reviewer").locator("textarea").fill("Dr. Ada Lovelace")
        rationale = "Better calibrated; 80-90 subgroup no worse."
        field.filter(has_text="Rationale").locator("textarea").fill(rationale)
        select = field.filter(has_text="Decision").locator("button.p-select-button__control")
        select.focus()
        page.keyboard.press("ArrowDown")  # opens the options (a mouse click only focuses it)
        page.get_by_role("option", name="approve", exact=True).click()
        sh.screenshot(page, "prefect-promotion-review")
        # Wait for the UI's resume request to be answered: closing the browser right after the
        # click could abort it (CI: the run stayed paused).
        resume_url = f"/flow_runs/{run.id}/resume"
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith(resume_url), timeout=30_000
        ) as answered:
            dialog.get_by_role("button", name="Submit").click()
        assert answered.value.ok, (answered.value.status, answered.value.text())
        assert not blocked, blocked
    state = running.result()
    assert state.is_completed(), state
    record = state.result()
    assert record["decision"] == "approved" and record["reviewer"] == "Dr. Ada Lovelace"
    assert record["via"] == "prefect-ui" and record["approved_digest"] == "a" * 64
    assert record["packet_sha256"] == _packet().sha256()


def test_a_rejection_from_code_is_recorded_with_its_reason(
    prefect_server: Any, required_approval: None
) -> None:
    running = Running(prefect_server.api_url, f"review-api-{time.time_ns()}")
    run = running.wait_paused()
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        resume_flow_run(
            run.id,
            run_input={"decision": "reject", "reviewer": "Dr. Grace Hopper",
                       "rationale": "Worse in the 80-90 subgroup."},
        )  # fmt: skip
    state = running.result()
    assert state.is_completed(), state
    record = state.result()
    assert record["decision"] == "rejected" and record["approved_digest"] is None
    assert record["rationale"] == "Worse in the 80-90 subgroup."


def test_nobody_answering_before_the_timeout_means_not_promoted(
    prefect_server: Any, required_approval: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMIT_APPROVAL_TIMEOUT_S", "6")
    get_settings.cache_clear()
    running = Running(prefect_server.api_url, f"review-timeout-{time.time_ns()}")
    running.wait_paused()
    state = running.result()
    assert state.is_completed(), state  # the run resumed itself at the deadline and finished
    record = state.result()
    assert record["decision"] == "timed_out" and record["approved_digest"] is None
    assert record["reviewer"] == "nobody" and record["via"] == "timeout"
