"""Drill: the service under c8 load while a blue/green redeploy happens: zero failed requests.

Eight keep-alive clients follow the live server as clients of the local deployment do (the state
file `readmit.ops.deploy` writes: `read_state(run_dir).url`, asked before every request) and post
real feed rows (identifiers, every disposition, unknown patients) from before the new server
starts until a few seconds after the old one is stopped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from load import run_load
from service_helpers import READY_TIMEOUT_S, encounter_json

from readmit.ops import deploy, processes

pytestmark = [pytest.mark.integration, pytest.mark.drill("redeploy_under_load")]


def test_a_redeploy_under_c8_load_fails_no_request(
    bento_tag: str, run_root: Path, holdout_rows: pd.DataFrame, record_property
) -> None:
    run_dir, base = run_root / "redeploy-drill", deploy.free_port()
    first = deploy.deploy_bento(
        bento_tag, run_dir=run_dir, base_port=base, ready_timeout_s=READY_TIMEOUT_S
    )
    second: deploy.DeployResult | None = None
    try:

        def live_url() -> str:
            current = deploy.read_state(run_dir)
            assert current is not None
            return current.url

        result = run_load(
            live_url,
            lambda: deploy.deploy_bento(
                bento_tag, run_dir=run_dir, base_port=base, ready_timeout_s=READY_TIMEOUT_S
            ),
            bodies=[encounter_json(row) for _, row in holdout_rows.iterrows()],
            clients=8,
            before_s=1.0,
            after_s=3.0,
        )
        second = result.value
        print("redeploy under c8 load:", result.summary())
        record_property("redeploy_failed_requests", result.failed)  # benchmarks/resilience.py
        record_property("redeploy_requests", result.ok + result.failed)
        assert second is not None and second.replaced == first.server
        assert not processes.alive(first.server.pid)
        assert result.failed == 0, (result.codes, result.errors)
        assert result.ok > 100, result.summary()
        assert result.by_url[first.server.url] > 0, result.by_url  # the old one answered ...
        assert result.by_url[second.server.url] > 0, result.by_url  # ... then the new one
    finally:
        deploy.stop(run_dir)
        for server in (first.server, second.server if second else None):
            if server is not None and processes.alive(server.pid, server.start_time):
                deploy.stop_server(server.pid, server.start_time)
