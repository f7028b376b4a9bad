"""The loop on served traffic, on the real parts: a request answered by the real bento shows up in
the next run of the `monitoring` deployment on the real Prefect server (worker, prefect.yaml);
its outcome, added later with `readmit outcomes add`, turns the window's estimate into a realised
figure; a drifted stream of served traffic then fires the `retraining` deployment's trigger, and
the challenger learns from the served encounters whose outcomes matured.

The worker's flow runs share this process' READMIT_ARTIFACTS_URI and BENTOML_HOME
(tests/conftest.py); the bento is served with the same store, as `make up` serves it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pendulum
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit import data, pseudonyms, storage
from readmit.data import outcomes
from readmit.model import registry
from readmit.monitoring import drift, windows
from readmit.ops import audit, deploy
from readmit.serving.scoring import feed_records
from readmit.settings import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.integration

FLUSH_S = 1.0
SERVED_ROWS = 1500


def _window_of(keys: set[str]) -> dict[str, object]:
    """The stored assessment of the window holding these encounters (they share one)."""
    layout = get_settings().layout
    for wid, bases in windows.list_windows(layout).items():
        if keys <= set(windows.read_served(bases)["encounter_key"]):
            return dict(storage.read_json(f"{layout.window_dir(wid)}/assessment.json"))
    raise AssertionError("no monitoring window holds the served encounters")


def test_a_served_request_reaches_monitoring_and_its_outcome_turns_it_realised(
    prefect_worker, tmp_path, full_frame
):
    from flows.training import training_flow

    settings = get_settings()
    ordered = data.in_time_order(full_frame)
    known, unseen = data.split_by_patient(ordered.iloc[:20_000], holdout_fraction=0.3, seed=9)
    train_csv = tmp_path / "reference.csv"
    train_csv.write_bytes(data.to_csv_bytes(known))
    (batch,) = drift.sample_batches(unseen, n_batches=1, batch_size=SERVED_ROWS, seed=4)
    api_url = prefect_worker.server.api_url
    with temporary_settings({PREFECT_API_URL: api_url}), monitoring_schedule_paused():
        trained = training_flow(data_uri=str(train_csv), search_budget_s=5)
        registry.promote(trained["tag"], reason="served-loop test champion")
        bento = deploy.build_bento(trained["tag"], settings)
        _serve(bento, batch, tmp_path / "serve")
        key = settings.pseudonym_key_bytes
        served_keys = {pseudonyms.pseudonym(key, "encounter_id", e) for e in batch["encounter_id"]}

        first = run_deployment("monitoring/monitoring", timeout=300)
        assert first.state.is_completed(), first.state
        before = _window_of(served_keys)
        # The window is an hour of the session's traffic: other tests' rows may share it.
        assert before["estimate"]["estimated_auc"] is not None
        stored = outcomes.read_received(settings.artifacts_uri)
        assert not served_keys & set(stored["encounter_key"])  # no outcome yet: none counted
        assert before["skew"]["ok"] is True, before["skew"]  # re-scored as the service scored
        assert trained["tag"] in before["model_tags"]

        outcomes_csv = tmp_path / "outcomes.csv"
        batch[["encounter_id", "readmitted"]].to_csv(outcomes_csv, index=False)
        added = subprocess.run(
            [sys.executable, "-m", "readmit_cli", "outcomes", "add", str(outcomes_csv)],
            capture_output=True, text=True, cwd=PROJECT_ROOT, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert f"{SERVED_ROWS} accepted" in added.stdout and "0 of unknown" in added.stdout
        second = run_deployment("monitoring/monitoring", timeout=300)
        assert second.state.is_completed(), second.state
        after = _window_of(served_keys)
        cohort = int(data.in_cohort(batch).sum())  # the batch's encounters monitoring judges
        assert after["n_labelled"] - before["n_labelled"] == cohort, (before, after)
        assert after["label_coverage"] > before["label_coverage"]
        assert after["realised_auc"] is not None
        stored = outcomes.read_received(settings.artifacts_uri)
        assert served_keys <= set(stored["encounter_key"])
        assert not set(pd.Series(batch["encounter_id"]).astype(str)) & set(stored["encounter_key"])

        # A drifted stream: served, its outcomes matured; the event fires the retraining trigger.
        rest = unseen[~unseen["patient_nbr"].isin(batch["patient_nbr"])]
        (clean,) = drift.sample_batches(rest, n_batches=1, batch_size=2000, seed=5)
        drifted = drift.inject(clean, "unseen_category", "strong", seed=3)  # major (measured)
        _serve(bento, drifted, tmp_path / "serve-drifted")
        outcomes.drop(settings.artifacts_uri, "drifted", drifted)
        _wait_no_retraining_running(timeout_s=420)  # an earlier drift's run would cancel ours
        since = pendulum.now("UTC")
        third = run_deployment("monitoring/monitoring", parameters={"cooldown_s": 0}, timeout=300)
        assert third.state.is_completed(), third.state
        run = _wait_for_retraining(since, timeout_s=420)
    assert run.state.is_completed(), run.state
    challenger = next(
        r for r in reversed(audit.read(settings.artifacts_uri))
        if r["decision"] in ("promoted", "rejected") and pendulum.parse(r["at"]) >= since
    )  # fmt: skip  # the retraining the drifted stream started (an earlier drift may have too)
    data_used = registry.load_model(challenger["tag"]).metadata["data"]
    assert data_used["labelled_batches"] >= 1  # served windows with matured outcomes
    champion_rows = registry.load_model(trained["tag"]).metadata["data"]["train_rows"]
    assert data_used["rows"] > champion_rows + 1500


@contextmanager
def monitoring_schedule_paused() -> Iterator[None]:
    """The monitoring deployment's own schedule paused, so its runs are the test's: a scheduled
    run at the same moment is cancelled by the deployment's concurrency limit, or reads the
    test's chunks first with the default cooldown."""

    async def set_paused(paused: bool) -> None:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("monitoring/monitoring")
            action = client.pause_deployment if paused else client.resume_deployment
            await action(deployment.id)

    asyncio.run(set_paused(True))
    try:
        yield
    finally:
        asyncio.run(set_paused(False))


def _serve(bento: str, feed: pd.DataFrame, run_dir: Path) -> None:
    """Serve `feed` (raw rows, no outcome) through the real bento, then let the log ship."""
    port = deploy.free_port()
    env = {"READMIT_LOG_FLUSH_SECONDS": str(FLUSH_S)}
    proc, _, log = deploy.start_server(bento, port, run_dir=run_dir, env=env)
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, 180)
        assert ok, f"{reason} ({log})"
        bodies = feed_records(feed.drop(columns=["readmitted"]))
        for start in range(0, len(bodies), 500):
            response = httpx.post(
                f"{url}/predict_batch", json={"encounters": bodies[start : start + 500]},
                timeout=60,
            )  # fmt: skip
            assert response.status_code == 200, response.text
        time.sleep(3 * FLUSH_S)
    finally:
        deploy.stop_server(proc.pid)  # SIGTERM: ships what is queued


def _wait_no_retraining_running(timeout_s: float) -> None:
    """Until no retraining run is scheduled, pending or running: the deployment cancels a new
    run while one is going (concurrency limit 1), and earlier drift in the session may have
    started one."""

    async def busy() -> bool:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retraining"]))
            )
        return any(r.state is not None and not r.state.is_final() for r in runs)

    deadline = time.monotonic() + timeout_s
    while asyncio.run(busy()):
        assert time.monotonic() < deadline, f"a retraining run still going after {timeout_s} s"
        time.sleep(3)


def _wait_for_retraining(since: Any, timeout_s: float) -> Any:
    """The first retraining run started after `since` that finished."""

    async def runs() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retraining"]))
            )

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in asyncio.run(runs()):
            if run.created and run.created >= since and run.state and run.state.is_final():
                return run
        time.sleep(3)
    raise AssertionError(f"no retraining run finished within {timeout_s:.0f} s")
