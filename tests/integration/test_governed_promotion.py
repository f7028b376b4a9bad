"""Governed promotion end to end, on the real parts: the session's Prefect server, worker and
deployments (prefect.yaml), the real bento served blue/green, the outcomes feed.

A champion is in production and served. The `experiment` deployment starts a shadow experiment
with a challenger (the service is rolled to a bento carrying both, with no downtime); raw feed
rows of unseen patients are served; monitoring reads the prediction log; their outcomes arrive;
the `experiment` deployment's look decides, emits `readmit.experiment.decided` and returns the
service to the champion alone; the event triggers the `promotion` deployment, which pauses for a
reviewer (approval required, as in production); the reviewer approves; the challenger is promoted
and redeployed. Every step is in the audit log, and the registry record of the promotion holds
the approval with the digest that was approved.

The known truth: the champion was trained on inverted outcomes (it ranks patients backwards),
the challenger on the real ones, so the challenger is truly better and the test must find it
within the served encounters (1,500; a decision needs 500 matured outcomes at least).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pendulum
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments import run_deployment
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit import data
from readmit.model import registry
from readmit.monitoring import drift
from readmit.ops import audit, deploy
from readmit.serving.scoring import feed_records
from readmit.settings import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.integration

SERVED = 1500


def _inverted_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """The same encounters with 30-day readmission inverted: a model trained on them is wrong."""
    return frame.assign(readmitted=np.where(frame["readmitted"] == "<30", "NO", "<30"))


async def _runs(deployment: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def _wait_run(deployment: str, since: Any, want: str, timeout_s: float) -> Any:
    """The first run of `deployment` created after `since` that is paused / final."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in asyncio.run(_runs(deployment)):
            reached = run.state is not None and (
                run.state.is_paused() if want == "paused" else run.state.is_final()
            )
            if run.created and run.created >= since and reached:
                return run
        time.sleep(2)
    raise AssertionError(f"no {deployment} run became {want} within {timeout_s:.0f} s")


async def _require_approval(deployment: str) -> None:
    """This deployment's runs wait for a person, as in production (READMIT_APPROVAL)."""
    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        env = {"READMIT_APPROVAL": "required", "READMIT_APPROVAL_TIMEOUT_S": "600"}
        await client.update_deployment(found.id, DeploymentUpdate(job_variables={"env": env}))


def test_an_experiment_decides_a_person_approves_and_the_winner_serves(
    prefect_worker: Any, tmp_path: Path, full_frame: pd.DataFrame
) -> None:
    from flows.deployment import deployment_flow
    from flows.training import training_flow

    settings = get_settings()
    ordered = data.in_time_order(full_frame)
    # encounters no other test of the session serves or gives outcomes for (the stores are shared)
    known, unseen = data.split_by_patient(ordered.iloc[40_000:70_000], holdout_fraction=0.3,
                                          seed=21)  # fmt: skip
    champion_csv, challenger_csv = tmp_path / "champion.csv", tmp_path / "challenger.csv"
    champion_csv.write_bytes(data.to_csv_bytes(_inverted_outcomes(known)))
    challenger_csv.write_bytes(data.to_csv_bytes(known))
    (feed,) = drift.sample_batches(unseen, n_batches=1, batch_size=SERVED, seed=8)
    api_url = prefect_worker.server.api_url
    with temporary_settings({PREFECT_API_URL: api_url}):
        champion = training_flow(data_uri=str(champion_csv), search_budget_s=3)["tag"]
        challenger = training_flow(data_uri=str(challenger_csv), search_budget_s=5)["tag"]
        registry.promote(champion, reason="governed-promotion test champion")
        served = deployment_flow(containerize=False)
        try:
            since = pendulum.now("UTC")
            started = run_deployment("experiment/experiment", timeout=600, parameters={
                "action": "start", "challenger": challenger, "mode": "shadow",
                "started_by": "test",
            })  # fmt: skip
            assert started.state.is_completed(), started.state
            live = deploy.running_server()
            assert live is not None and live.pid != served["pid"]  # rolled, blue/green
            info = httpx.get(f"{live.url}/model", timeout=30).json()
            assert info["experiment"]["challenger"] == challenger, info
            _serve(live.url, feed)
            _wait_shipped(info["experiment"]["id"], SERVED)
            _outcomes_arrive(feed, tmp_path)
            monitored = run_deployment("monitoring/monitoring", timeout=600,
                                       parameters={"cooldown_s": 0})  # fmt: skip
            assert monitored.state.is_completed(), monitored.state
            asyncio.run(_require_approval("promotion/promotion"))
            looked = run_deployment("experiment/experiment", timeout=600)
            assert looked.state.is_completed(), looked.state
            decided = [r for r in audit.read(settings.artifacts_uri)
                       if r["decision"] == "experiment_decided"]  # fmt: skip
            assert decided and decided[-1]["outcome"] == "challenger_better", decided
            alone = deploy.running_server()
            assert alone is not None and alone.pid != live.pid  # the champion alone again
            assert httpx.get(f"{alone.url}/model", timeout=30).json().get("experiment") is None

            paused = _wait_run("promotion", since, "paused", timeout_s=300)
            resume_flow_run(paused.id, run_input={
                "decision": "approve", "reviewer": "Dr. Ada Lovelace",
                "rationale": "Won the shadow experiment; holdout and subgroups no worse.",
            })  # fmt: skip
            done = _wait_run("promotion", since, "final", timeout_s=600)
            assert done.state.is_completed(), done.state
        finally:
            server = deploy.running_server()
            if server is not None:
                deploy.stop_server(server.pid, server.start_time)

    assert registry.production_tag() == challenger
    decisions = [r for r in audit.read(settings.artifacts_uri) if r["at"] >= since.isoformat()[:19]]
    kinds = [r["decision"] for r in decisions]
    for step in ("experiment_started", "experiment_decided", "approval", "promoted"):
        assert step in kinds, kinds
    promoted = next(r for r in decisions if r["decision"] == "promoted" and r["tag"] == challenger)
    assert promoted["approved_by"] == "Dr. Ada Lovelace"
    assert promoted["manifest_sha256"] == registry.model_digest(challenger)
    record = next(
        r for r in registry.read_state().history if r.get("id") == promoted["registry_record"]
    )
    assert record["approval"]["approved_digest"] == registry.model_digest(challenger)
    assert record["approval"]["rationale"].startswith("Won the shadow experiment")


def _serve(url: str, feed: pd.DataFrame) -> None:
    """Raw feed rows (identifiers, every disposition, unknown patients; no outcome) through the
    live service, then time for the prediction log to ship."""
    bodies = feed_records(feed.drop(columns=["readmitted"]))
    for start in range(0, len(bodies), 500):
        body = {"encounters": bodies[start : start + 500]}
        response = httpx.post(f"{url}/predict_batch", json=body, timeout=60)
        assert response.status_code == 200, response.text


def _wait_shipped(experiment_id: str, rows: int, timeout_s: float = 120) -> None:
    """Until the prediction log holds the experiment's served rows (it ships every 2 s)."""
    from readmit.monitoring import served as served_log
    from readmit.serving import prediction_log_uri

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunks = served_log.list_chunks(prediction_log_uri(get_settings()))
        good, _ = served_log.read_chunks(chunks, get_settings().layout.bad_chunks_dir())
        ours = sum(int((f["experiment_id"] == experiment_id).sum()) for _, f in good
                   if "experiment_id" in f)  # fmt: skip
        if ours >= rows:
            return
        time.sleep(2)
    raise AssertionError(f"the prediction log did not ship {rows} rows within {timeout_s:.0f} s")


def _outcomes_arrive(feed: pd.DataFrame, tmp_path: Path) -> None:
    """The outcomes feed delivers the served encounters' outcomes (30+ days later, in life)."""
    csv = tmp_path / "outcomes.csv"
    feed[["encounter_id", "readmitted"]].to_csv(csv, index=False)
    added = subprocess.run(
        [sys.executable, "-m", "readmit_cli", "outcomes", "add", str(csv)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
