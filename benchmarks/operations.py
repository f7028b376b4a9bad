"""Benchmark: running readmit for real, on this machine, on 127.0.0.1.

1. Cold `up` to all-healthy: Prefect server (fresh SQLite), worker + `prefect deploy --all`,
   SeaweedFS S3, Pushgateway, Prometheus, in a fresh run directory on free ports.
2. The training flow on the full data with artifacts on local files and on S3, side by side
   (same data, same search budget, one after the other in this process).
3. Inbox to retraining on the real server: a drifted batch lands in the inbox, the monitoring
   deployment runs (as its cron schedule would), emits readmit.drift.detected, the retraining
   deployment's trigger creates a run, the worker starts it. Timed until that run is Running.

The last line is one JSON object: up_s, train_local_s, train_s3_s, inbox_to_event_s,
inbox_to_retrain_s.

    .venv/bin/python benchmarks/operations.py [--search-budget 60]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost is imported


def load_services():
    spec = importlib.util.spec_from_file_location(
        "readmit_local_services", ROOT / "deployments/local/services.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed_training(artifacts_uri: str, budget: float) -> float:
    from flows.training import training_flow
    from readmit.settings import get_settings

    os.environ["READMIT_ARTIFACTS_URI"] = artifacts_uri
    os.environ["READMIT_MODEL_NAME"] = f"readmission-bench-{uuid.uuid4().hex[:6]}"
    get_settings.cache_clear()
    start = time.perf_counter()
    training_flow(search_budget_s=budget)
    return time.perf_counter() - start


async def first_retraining_running(api_url: str, timeout_s: float) -> float | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retraining"]))
            )
            for run in runs:
                if run.state and (run.state.is_running() or run.state.is_final()):
                    return time.monotonic()
            await asyncio.sleep(0.5)
    return None


def drift_event_at(api_url: str, since: float) -> float | None:
    """Wall-clock time (epoch s) the server recorded the first drift event after `since`."""
    from datetime import UTC, datetime

    import httpx

    since_iso = datetime.fromtimestamp(since, UTC).isoformat()
    body = {
        "filter": {
            "event": {"name": ["readmit.drift.detected"]},
            "occurred": {"since": since_iso},
        },
        "limit": 10,
    }
    events = httpx.post(f"{api_url}/events/filter", json=body, timeout=10).json()["events"]
    times = [datetime.fromisoformat(e["occurred"]).timestamp() for e in events]
    return min(times) if times else None


def inbox_to_retrain(cfg, services, budget: float) -> tuple[float | None, float | None]:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.training import training_flow
    from readmit import data
    from readmit.data import inbox
    from readmit.model import registry
    from readmit.monitoring import drift
    from readmit.settings import get_settings

    state = services.load_state(cfg)
    api = state["services"]["prefect-server"]["urls"]["api"]
    settings = get_settings()
    frame = data.exclude_died_or_hospice(
        data.in_time_order(data.read_encounters(settings.data_uri).frame)
    )
    csv = Path(tempfile.mkdtemp()) / "reference.csv"
    csv.write_bytes(data.to_csv_bytes(frame.iloc[:20000]))
    with temporary_settings({PREFECT_API_URL: api}):
        trained = training_flow(data_uri=str(csv), search_budget_s=budget)
        if trained["stage"] != "production":
            registry.promote(trained["tag"], reason="operations benchmark")
        batch = drift.inject(frame.iloc[20000:25000], "covariate_shift", "strong", seed=1)
        features, _ = inbox.split_labels(batch)
        start, start_wall = time.monotonic(), time.time()
        inbox.publish_batch(settings.artifacts_uri, "batch-9001", features)
        run_deployment("monitoring/monitoring", timeout=0)
        started = asyncio.run(first_retraining_running(api, timeout_s=600))
        event_at = drift_event_at(api, start_wall)
    to_event = None if event_at is None else event_at - start_wall
    return to_event, None if started is None else started - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search-budget", type=float, default=60.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="readmit-ops-"))
    home = scratch / "bentoml"
    os.environ.update(
        {
            "READMIT_BENTOML_HOME": str(home),
            "BENTOML_HOME": str(home),
            "READMIT_ARTIFACTS_URI": str(scratch / "artifacts"),
        }
    )
    sys.path.insert(0, str(ROOT))
    services = load_services()
    cfg = services.Config(run_dir=scratch / "run", free_ports=True, tie_to_parent=True)
    try:
        start = time.perf_counter()
        services.up(cfg)
        up_s = time.perf_counter() - start
        print(f"cold up to all-healthy (incl. deploy --all): {up_s:.1f} s")
        env = services.client_env(cfg, services.load_state(cfg))
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        train_local_s = timed_training(str(scratch / "artifacts-local"), args.search_budget)
        print(f"training flow, artifacts on local files: {train_local_s:.1f} s")
        bucket = cfg.bucket
        train_s3_s = timed_training(
            f"s3://{bucket}/bench-{uuid.uuid4().hex[:6]}", args.search_budget
        )
        print(f"training flow, artifacts on S3 (SeaweedFS): {train_s3_s:.1f} s")
        os.environ["READMIT_ARTIFACTS_URI"] = env.get(
            "READMIT_ARTIFACTS_URI", str(scratch / "artifacts")
        )
        os.environ.pop("READMIT_MODEL_NAME", None)
        from readmit.settings import get_settings

        get_settings.cache_clear()
        event_s, retrain_s = inbox_to_retrain(cfg, services, min(args.search_budget, 20))
        print(
            f"inbox -> drift event (monitoring run started at once, as its schedule would): "
            f"{event_s if event_s is None else round(event_s, 1)} s"
        )
        print(f"inbox -> drift event -> retraining run Running: {retrain_s} s")
    finally:
        services.stop(cfg)
    print(
        json.dumps(
            {
                "up_s": round(up_s, 1),
                "train_local_s": round(train_local_s, 1),
                "train_s3_s": round(train_s3_s, 1),
                "inbox_to_event_s": None if event_s is None else round(event_s, 1),
                "inbox_to_retrain_s": None if retrain_s is None else round(retrain_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
