"""End to end on a real Prefect server: a drifted batch -> monitoring -> readmit.drift.detected
-> the retraining deployment's trigger -> a retraining run that promotes or rejects with a reason.

The server, the `readmit-process` pool, a worker and `prefect deploy --all` (prefect.yaml) are
started by the session fixtures in conftest.py; flow runs started by the worker inherit this
process' BENTOML_HOME and READMIT_ARTIFACTS_URI (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import stack_helpers as sh
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from readmit import data
from readmit.data import inbox
from readmit.model import registry
from readmit.monitoring import drift
from readmit.ops import audit
from readmit.settings import get_settings

pytestmark = pytest.mark.integration


async def _retraining_runs(api_url: str) -> list:
    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retraining"]))
        )


def _wait_for_completed_retraining(api_url: str, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = asyncio.run(_retraining_runs(api_url))
        for run in runs:
            if run.state and run.state.is_final():
                return run
        time.sleep(3)
    raise AssertionError(f"no retraining run finished within {timeout_s:.0f} s")


def test_drift_event_triggers_retraining(prefect_worker, tmp_path, full_frame):
    from flows.training import training_flow

    settings = get_settings()
    assert prefect_worker.deployed, "prefect.yaml was not deployed"
    ordered = data.exclude_died_or_hospice(data.in_time_order(full_frame))
    train_csv = tmp_path / "reference.csv"
    train_csv.write_bytes(data.to_csv_bytes(ordered.iloc[:8000]))
    api_url = prefect_worker.server.api_url
    with temporary_settings({PREFECT_API_URL: api_url}):
        trained = training_flow(data_uri=str(train_csv), search_budget_s=5)
        if trained["stage"] != "production":
            registry.promote(trained["tag"], reason="test champion")
        # A later batch with strong covariate shift, and its labels.
        later = ordered.iloc[8000:10000]
        drifted = drift.inject(later, "covariate_shift", "strong", seed=3)
        features, labels = inbox.split_labels(drifted)
        inbox.publish_batch(settings.artifacts_uri, "batch-0001", features)
        inbox.publish_labels(settings.artifacts_uri, "batch-0001", labels)

        monitoring = run_deployment("monitoring/monitoring", timeout=300)
        assert monitoring.state.is_completed(), monitoring.state
        run = _wait_for_completed_retraining(api_url, timeout_s=420)
    assert run.state.is_completed(), run.state
    assert "drift" in run.parameters["reason"]
    # The trigger's parameters join the deployment's (the `prefect_worker` fixture sets this one).
    assert run.parameters["search_budget_s"] == sh.RETRAINING_SEARCH_BUDGET_S
    decisions = [r["decision"] for r in audit.read(settings.artifacts_uri)]
    assert "drift_detected" in decisions and "retrain_started" in decisions
    outcome = next(
        r
        for r in reversed(audit.read(settings.artifacts_uri))
        if r["decision"] in ("promoted", "rejected")
    )
    assert outcome["reasons"], outcome
    if outcome["decision"] == "promoted":
        assert registry.production_tag() == outcome["tag"]
    else:
        assert registry.production_tag() == outcome["champion"]
