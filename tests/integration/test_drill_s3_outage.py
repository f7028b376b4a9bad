"""Drill: S3 refusing all requests during a monitoring run.

A real SeaweedFS store of its own (the session's `s3_server` is shared by other tests, so this
drill stops and restarts a private one, started by the same deployments/local/services.py): the
artifact store (inbox, batches, reference, reports, state, audit) is on it. Three feed batches
wait in the inbox, the first one strongly drifted.

1. The store is down before the run starts: the run ends FAILED, quickly, with the store's
   connection error, and changes nothing.
2. The store comes back (same ports, same data folder), and goes down again in the middle of
   the next run, right after the first batch was moved to `batches/`: that run ends FAILED too.
3. Back again, and down again inside the move of the second batch: copied to `batches/`, not
   yet deleted from the inbox. FAILED.
4. The store comes back; the next run completes. Each batch is in `batches/` once and has one
   drift report, the inbox is empty, the monitoring state is written, no drift event twice;
   every batch was assessed once, but the one caught inside its move (assessed again: its
   report is rewritten, same place). And the drift of the first batch, assessed by a run that
   then failed, still raises its event: it is emitted before the batch leaves the inbox.

S3 requests get 2 attempts while the store is down (the default is 8, with back-off: a short
outage is ridden out, which is what test_s3_retries.py checks), the default after.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import botocore.exceptions
import pandas as pd
import pytest
import stack_helpers as sh
from prefect.testing.utilities import prefect_test_harness

from readmit import data, monitoring, storage
from readmit.data import inbox
from readmit.model import registry
from readmit.monitoring import drift
from readmit.ops import audit
from readmit.schema import INPUT_COLUMNS
from readmit.settings import Settings, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.drill("s3_outage_monitoring")]

BATCHES = [inbox.batch_id(i) for i in range(3)]
FAIL_WITHIN_S = 60  # a refused store fails the run in seconds, it does not hang it
READY_WITHIN_S = 90  # after a restart, every stored object reads back within this


@dataclasses.dataclass
class Store:
    """A private SeaweedFS: its services.Config, the ports it first got, its client env."""

    services: ModuleType
    cfg: Any
    ports: dict[str, int]
    env: dict[str, str]

    def stop(self) -> None:
        assert self.services.stop(self.cfg, ["s3"]) == ["s3"]

    def restart(self, probes: list[str]) -> dict[str, Any]:
        """Start it again on the same ports and data folder (SeaweedFS keeps its metadata per
        port). Healthy for services.py is "the bucket lists"; ready here is "every object in
        `probes` reads back": seconds to each, and the errors met in between."""
        t0 = time.monotonic()
        self.cfg = dataclasses.replace(self.cfg, free_ports=False, ports=dict(self.ports))
        self.services.up(self.cfg, only=["s3"], run_deploy=False)
        record = self.services.load_state(self.cfg)["services"]["s3"]
        assert record["ports"] == self.ports
        assert record["urls"]["endpoint"] == self.env["AWS_ENDPOINT_URL"]
        healthy = time.monotonic() - t0
        errors: Counter[str] = Counter()
        for url in probes:
            while True:
                try:
                    storage.read_bytes(url)
                    break
                except Exception as exc:  # what a reader meets right after the restart
                    errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                    assert time.monotonic() - t0 < READY_WITHIN_S, (url, errors)
                    time.sleep(0.1)
        return {"healthy_s": round(healthy, 2), "ready_s": round(time.monotonic() - t0, 2),
                "errors": dict(errors)}  # fmt: skip


@pytest.fixture(scope="module")
def outage(
    local_services: ModuleType, tmp_path_factory: pytest.TempPathFactory, full_frame: pd.DataFrame
) -> Iterator[dict[str, Any]]:
    """Runs the four phases once (module docstring); what was seen, for the tests below."""
    import s3fs

    cfg = local_services.Config(
        run_dir=tmp_path_factory.mktemp("s3-drill"), free_ports=True, tie_to_parent=True,
        bucket="readmit-drill", credentials=(f"drill{secrets.token_hex(6)}",
                                             secrets.token_urlsafe(24)),
    )  # fmt: skip
    store = Store(local_services, cfg, {}, {})
    with pytest.MonkeyPatch.context() as patch:
        try:
            local_services.up(cfg, only=["s3"], run_deploy=False)
            record = local_services.load_state(cfg)["services"]["s3"]
            store.ports, store.env = dict(record["ports"]), local_services.s3_env(cfg, record)
            for key, value in store.env.items():
                patch.setenv(key, value)
            patch.setenv("READMIT_ARTIFACTS_URI", f"s3://{cfg.bucket}/artifacts")
            patch.setenv("READMIT_MODEL_NAME", f"readmission-drill-{uuid.uuid4().hex[:6]}")
            get_settings.cache_clear()
            s3fs.S3FileSystem.clear_instance_cache()
            yield run_phases(store, full_frame, patch)
        finally:
            local_services.stop(store.cfg)
            get_settings.cache_clear()
            s3fs.S3FileSystem.clear_instance_cache()


def run_phases(store: Store, full_frame: pd.DataFrame, patch: pytest.MonkeyPatch) -> dict[str, Any]:
    from flows.monitoring import monitoring_flow

    settings = get_settings()
    tag, later = champion_with_reference(full_frame, settings)
    feed = drift.sample_batches(later, n_batches=3, batch_size=1500, seed=6)
    feed[0] = drift.inject(feed[0], "covariate_shift", "strong", seed=3)
    for batch, rows in zip(BATCHES, feed, strict=True):
        inbox.publish_batch(settings.artifacts_uri, batch, rows.drop(columns=["readmitted"]))
    probes = storage.list_files(settings.layout.model_dir(registry.version_of(tag)))  # reference
    assert len(probes) == 5, probes
    seen: dict[str, Any] = {
        "tag": tag, "assessed": Counter(), "timings": {}, "failed": {}, "restarts": {},
    }  # fmt: skip
    real_monitor, real_mark, real_copy = (
        monitoring.monitor_batch,
        inbox.mark_processed,
        storage.copy,
    )

    def counting_monitor(reference: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        seen["assessed"][name] += 1
        return real_monitor(reference, name, *args, **kwargs)

    def outage_run(phase: str) -> None:
        """A run with the store failing; the store is back afterwards."""
        attempts(patch, 2)
        t0 = time.monotonic()
        state = monitoring_flow(cooldown_s=0, return_state=True)
        seen["timings"][f"{phase}_run"] = time.monotonic() - t0
        seen["failed"][phase] = (state, time.monotonic() - seen["timings"].pop("outage_at", t0))
        seen["restarts"][phase] = store.restart(probes)
        seen[phase] = store_view(settings)

    patch.setattr(monitoring, "monitor_batch", counting_monitor)
    with prefect_test_harness(server_startup_timeout=120):
        store.stop()  # 1. down from the start
        outage_run("down_before")

        def mark_then_outage(artifacts_uri: str, batch: str) -> str:
            moved = real_mark(artifacts_uri, batch)
            if batch == BATCHES[0]:  # 2. down once the first batch is moved
                store.stop()
                seen["timings"]["outage_at"] = time.monotonic()
            return moved

        patch.setattr(inbox, "mark_processed", mark_then_outage)
        outage_run("down_between_batches")
        patch.setattr(inbox, "mark_processed", real_mark)

        def copy_then_outage(src: str, dst: str) -> str:
            copied = real_copy(src, dst)
            if dst.endswith(f"/batches/{BATCHES[1]}.csv"):  # 3. down inside the move
                store.stop()
                seen["timings"]["outage_at"] = time.monotonic()
            return copied

        patch.setattr(storage, "copy", copy_then_outage)
        outage_run("down_inside_a_move")
        patch.setattr(storage, "copy", real_copy)

        attempts(patch, None)  # 4. recovered
        t0 = time.monotonic()
        seen["result"] = monitoring_flow(cooldown_s=0)
        seen["timings"]["recovered_run"] = time.monotonic() - t0
    seen["after"] = store_view(settings)
    seen["reports"] = {
        b: storage.read_json(f"{settings.layout.drift_report_dir(b)}/drift.json") for b in BATCHES
    }
    timings = {k: round(v, 1) for k, v in seen["timings"].items()}
    print(f"timings (s): {timings}; assessed: {dict(seen['assessed'])}")
    fail_s = {phase: round(seconds, 1) for phase, (_, seconds) in seen["failed"].items()}
    print(f"seconds from outage to FAILED: {fail_s}; restarts: {seen['restarts']}")
    return seen


def champion_with_reference(
    full_frame: pd.DataFrame, settings: Settings
) -> tuple[str, pd.DataFrame]:
    """The service tests' small model in production, its monitoring reference on S3; and the
    unseen patients' feed rows the batches are drawn from."""
    period = data.in_time_order(full_frame).iloc[:20_000]
    known, unseen = data.split_by_patient(period, holdout_fraction=0.4, seed=4)
    holdout_feed, later = data.split_by_patient(unseen, holdout_fraction=0.6, seed=5)
    model = sh.service_helpers().small_model(data.exclude_died_or_hospice(known))
    metadata = {"threshold": 0.2, "label_definition": "<30", "metrics": {},
                "trained_at": "drill", "feature_names": list(INPUT_COLUMNS)}  # fmt: skip
    tag = registry.save_model(model, metadata)
    registry.promote(tag, reason="s3 outage drill")
    uris = monitoring.ReferenceUris.for_model(settings.artifacts_uri, registry.version_of(tag))
    monitoring.build_reference(uris, known, holdout_feed, model, "<30")
    return tag, later


def attempts(monkeypatch: pytest.MonkeyPatch, n: int | None) -> None:
    """S3 attempts per request for the next run (None: the default)."""
    if n is None:
        monkeypatch.delenv("READMIT_S3_MAX_ATTEMPTS", raising=False)
    else:
        monkeypatch.setenv("READMIT_S3_MAX_ATTEMPTS", str(n))
    get_settings.cache_clear()


def assert_failed_on_the_store(phase: str, state: Any, seconds: float) -> None:
    """The run ended FAILED (not crashed, not hung) with the store's connection error."""
    assert state.is_failed(), (phase, state)
    error = state.result(raise_on_failure=False)
    refused = isinstance(error, botocore.exceptions.EndpointConnectionError) or (
        isinstance(error, OSError) and "connect" in str(error).lower()
    )
    assert refused, (phase, repr(error))
    assert seconds < FAIL_WITHIN_S, f"{phase}: the run took {seconds:.1f} s to fail"


def store_view(settings: Settings) -> dict[str, Any]:
    layout = settings.layout
    reports = storage.list_files(layout.path("monitoring", "reports"), "*/drift.json")
    return {
        "inbox": inbox.pending(settings.artifacts_uri),
        "batches": [u.rsplit("/", 1)[1] for u in storage.list_files(layout.processed_dir())],
        "reports": sorted(u.rsplit("/", 2)[1] for u in reports),
        "state": storage.read_json(layout.monitoring_state())
        if storage.exists(layout.monitoring_state()) else None,
        "drift_events": [r for r in audit.read(settings.artifacts_uri)
                         if r["decision"] == "drift_detected"],
    }  # fmt: skip


def test_runs_fail_cleanly_and_after_recovery_each_batch_is_taken_once(
    outage: dict[str, Any],
) -> None:
    assert list(outage["failed"]) == ["down_before", "down_between_batches", "down_inside_a_move"]
    for phase, (state, seconds) in outage["failed"].items():
        assert_failed_on_the_store(phase, state, seconds)
    first = outage["down_before"]
    assert first["inbox"] == BATCHES and first["batches"] == [] and first["reports"] == []
    assert first["state"] is None  # a failed run leaves the state as it was (none yet)
    between = outage["down_between_batches"]
    assert between["inbox"] == BATCHES[1:] and between["batches"] == [f"{BATCHES[0]}.csv"]
    assert between["reports"] == [BATCHES[0]]
    # its drift event was raised before the batch left the inbox, and the cooldown kept with it
    assert [e["batch_ids"] for e in between["drift_events"]] == [[BATCHES[0]]]
    assert between["state"] is not None and between["state"]["last_event_at"]
    assert "last_success_at" not in between["state"]
    inside = outage["down_inside_a_move"]
    assert inside["inbox"] == BATCHES[1:]  # copied, not yet deleted: not lost
    assert inside["batches"] == [f"{b}.csv" for b in BATCHES[:2]]

    after, result = outage["after"], outage["result"]
    assert [b["batch_id"] for b in result["batches"]] == BATCHES[1:]
    assert after["inbox"] == [] and after["batches"] == [f"{b}.csv" for b in BATCHES]
    assert after["reports"] == BATCHES  # one report per batch
    assert [r["batch_id"] for r in outage["reports"].values()] == BATCHES
    drifted = outage["reports"][BATCHES[0]]
    assert drifted["alert"], f"the drill needs a batch that alerts: {drifted['severity']}"
    assert not any(outage["reports"][b]["alert"] for b in BATCHES[1:])
    # Assessed once each; the batch caught between copy and delete once more (same report).
    assert outage["assessed"] == Counter({BATCHES[0]: 1, BATCHES[1]: 2, BATCHES[2]: 1})
    assert after["state"] is not None and after["state"]["last_success_at"], after["state"]
    assert result["model_tag"] == outage["tag"]
    assert len(after["drift_events"]) <= 1, after["drift_events"]  # never twice


def test_drift_seen_by_a_run_that_then_failed_still_raises_its_event(
    outage: dict[str, Any],
) -> None:
    events = outage["after"]["drift_events"]
    assert [e["batch_ids"] for e in events] == [[BATCHES[0]]], events
