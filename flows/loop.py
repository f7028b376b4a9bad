"""The main job (`make run`): the whole loop on the embedded defaults.

train on the reference window -> build and serve the bento -> replay batches through the service
only, one monitoring window each, with one injected drift episode; their outcomes arrive later
through the outcomes feed -> monitor what the service logged (estimated, then realised AUC per
window) -> (drift) retrain on production data -> gate -> promote -> redeploy.

The replay packs hours of traffic into seconds, so the loop's monitoring windows are
`window_seconds` long (READMIT_MONITOR_WINDOW_SECONDS for its duration; an hour by default).

With `make up`, the drift event fires the `retraining` deployment's trigger on the Prefect
server. On the temporary local API there is no worker to run a triggered deployment, so this
flow calls the retraining flow itself when monitoring emitted the event: same code, same event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.deployment import deployment_flow
from flows.monitoring import monitoring_flow
from flows.retraining import retraining_flow
from flows.simulation import simulation_flow
from flows.training import training_flow
from readmit.ops import audit
from readmit.settings import get_settings


@contextmanager
def monitoring_windows_of(seconds: int) -> Iterator[None]:
    """READMIT_MONITOR_WINDOW_SECONDS set for the duration of the loop (then restored)."""
    name, before = (
        "READMIT_MONITOR_WINDOW_SECONDS",
        os.environ.get("READMIT_MONITOR_WINDOW_SECONDS"),
    )
    os.environ[name] = str(seconds)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.pop(name) if before is None else os.environ.__setitem__(name, before)
        get_settings.cache_clear()


@flow(name="readmit-loop", log_prints=True)
def loop_flow(
    serve: bool = True,
    n_batches: int = 6,
    batch_size: int = 2000,
    scenario: str = "covariate_shift",
    strength: Literal["weak", "moderate", "strong"] = "strong",
    drift_start: int = 3,
    search_budget_s: float = 60.0,
    window_seconds: int = 3,
) -> dict[str, Any]:
    """Train, serve, replay with drift, detect, retrain, gate, promote, redeploy; summarise."""
    with monitoring_windows_of(window_seconds):
        return run_loop(serve, n_batches, batch_size, scenario, strength, drift_start,
                        search_budget_s)  # fmt: skip


def run_loop(
    serve: bool,
    n_batches: int,
    batch_size: int,
    scenario: str,
    strength: Literal["weak", "moderate", "strong"],
    drift_start: int,
    search_budget_s: float,
) -> dict[str, Any]:
    """The loop's steps (see the module docstring)."""
    settings, logger = get_settings(), get_run_logger()
    trained = training_flow(window="reference", search_budget_s=search_budget_s)
    service = deployment_flow(model_tag=trained["tag"]) if serve else None
    replay = simulation_flow(
        n_batches=n_batches,
        batch_size=batch_size,
        scenario=scenario,
        strength=strength,
        drift_start=drift_start,
        service_url=service["url"] if service else None,
        via="service",
    )
    time.sleep(settings.log_flush_seconds + 1.0)  # the service ships its log every flush
    monitored = monitoring_flow()
    retrained = None
    if monitored["event"]:
        logger.info("drift event emitted: running the retraining flow (the trigger's target)")
        retrained = retraining_flow(
            reason="drift detected by the readmit-loop",
            search_budget_s=search_budget_s,
            redeploy_service=serve,
        )
    redeployed = (retrained or {}).get("deployment")
    return {
        "trained": trained,
        "service": redeployed or service,  # what serves now (blue/green moves the port)
        "replay": replay,
        "monitoring": monitored,
        "retraining": retrained,
        "audit": audit.read(settings.artifacts_uri, last=10),
    }


if __name__ == "__main__":
    loop_flow()
