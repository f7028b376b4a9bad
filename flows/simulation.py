"""Simulation flow: replay encounters as batches, with an optional seeded drift episode; each
batch's outcomes arrive `label_delay` batches later.

Two ways in, as a hospital would deliver them:
- "service" (`make run`): every batch is scored by the service, one monitoring window each (the
  replay waits for the next window); monitoring reads what the service logged, and the outcomes
  arrive later as files in the outcomes feed's drop folder (`encounter_id,readmitted`). Without
  a service URL an in-process stand-in ships the same prediction-log chunks the service would.
- "inbox": batches land in the inbox as CSV files, their labels in `labels/`.

Sources:
- "holdout" (default): patient-disjoint batches from the reference period that the model never
  saw. Without injected drift they are clean, so the injected episode is what monitoring sees.
- "future": the encounters after the reference window, in encounter_id order. The real data
  drifts on its own there (coding changes: e.g. up to 16 diagnoses recorded instead of 9 from
  2008 on), so every batch is already drifted against a reference-window model.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from readmit import data, storage
from readmit.data import inbox, outcomes
from readmit.layout import StoreLayout
from readmit.model import registry
from readmit.monitoring import drift, simulation
from readmit.serving import prediction_log_uri
from readmit.settings import get_settings

Source = Literal["holdout", "future"]
Via = Literal["service", "inbox"]


@task(cache_policy=NO_CACHE)
def plan_batches(source: Source, n_batches: int, batch_size: int, seed: int) -> list[Any]:
    """The batches to replay, before drift injection."""
    settings = get_settings()
    frame = data.read_encounters(settings.data_uri, settings.data_sha256).frame
    if source == "future":
        return simulation.future_batches(frame, settings.reference_fraction, batch_size)[:n_batches]
    unseen = data.split_feed(
        frame,
        window="reference",
        reference_fraction=settings.reference_fraction,
        holdout_fraction=0.2,
        seed=settings.seed,
    ).holdout_feed
    return drift.sample_batches(unseen, n_batches, batch_size, seed=seed)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def send_to_service(service_url: str, frame: Any, max_batch: int) -> int:
    """POST a batch to the service's /predict_batch in chunks; returns how many were scored."""
    records = simulation.service_records(frame)
    scored = 0
    with httpx.Client(base_url=service_url, timeout=60) as client:
        for chunk in simulation.chunks(records, max_batch):
            response = client.post("/predict_batch", json={"encounters": chunk})
            response.raise_for_status()
            scored += len(chunk)
    return scored


@task(cache_policy=NO_CACHE)
def log_as_served(frame: Any, seq: int) -> int:
    """The service's stand-in (no service running): score the batch with the production model
    on the served path and ship it as one prediction-log chunk, as a service worker would."""
    settings = get_settings()
    loaded = registry.load_model()
    simulation.ship_as_served(
        loaded.model, frame, prediction_log_uri(settings), datetime.now(UTC),
        model_tag=loaded.tag, threshold=float(loaded.metadata["threshold"]), seq=seq,
    )  # fmt: skip
    return len(frame)


def deliver(
    via: Via, batch_id: str, features: Any, seq: int, service_url: str | None, new_window: bool
) -> None:
    """A batch as the hospital sends it: to the service (in a monitoring window of its own when
    `new_window`), or as a file in the inbox."""
    settings = get_settings()
    if via == "inbox":
        inbox.publish_batch(settings.artifacts_uri, batch_id, features)
        return
    if new_window:
        wait_for_next_window(settings.monitor_window_seconds)
    if service_url:
        send_to_service(service_url, features, settings.max_batch_size)
    else:
        log_as_served(features, seq)


def deliver_outcomes(via: Via, batch_id: str, labels: Any) -> None:
    """A batch's outcomes, once they matured: the outcomes feed's drop folder (served traffic)
    or the inbox's `labels/`."""
    artifacts_uri = get_settings().artifacts_uri
    if via == "service":
        outcomes.drop(artifacts_uri, batch_id, labels)
    else:
        inbox.publish_labels(artifacts_uri, batch_id, labels)


def wait_for_next_window(window_s: float) -> None:
    """Sleep until the next monitoring window starts (windows are aligned on the UTC epoch)."""
    now = time.time()
    time.sleep(window_s - now % window_s + 0.05)


@flow(name="simulation", log_prints=True)
def simulation_flow(
    n_batches: int = 6,
    batch_size: int = 2000,
    source: Source = "holdout",
    scenario: str | None = "covariate_shift",
    strength: drift.Strength = "strong",
    mode: drift.Mode = "sudden",
    drift_start: int = 3,
    label_delay: int = 1,
    first_batch: int | None = None,
    service_url: str | None = None,
    seed: int = 7,
    via: Via = "inbox",
) -> dict[str, Any]:
    """Replay `n_batches` batches, outcomes one delay later, drift from `drift_start`.

    Args:
        n_batches: How many batches to replay.
        batch_size: Encounters per batch.
        source: "holdout" (clean, reference period) or "future" (real later encounters).
        scenario: Drift scenario (see readmit.monitoring.drift.SCENARIOS) or None for no drift.
        strength: weak, moderate or strong.
        mode: sudden or gradual.
        drift_start: Index of the first drifted batch within this replay.
        label_delay: Labels of batch k arrive when batch k + label_delay is published; the
            last `label_delay` batches' labels arrive with a later replay.
        first_batch: Number of the first batch id; default continues after the last one.
        service_url: The service that scores the batches when `via` is "service" (without it,
            an in-process stand-in ships the same prediction log).
        seed: Seed of the drift injection and of the batch sampling.
        via: "service" (served, one monitoring window per batch, outcomes through the outcomes
            feed) or "inbox" (batch files in the inbox, labels in `labels/`).
    """
    settings, logger = get_settings(), get_run_logger()
    batches = plan_batches(source, n_batches, batch_size, seed)
    episode = simulation.DriftEpisode(scenario, strength, mode, drift_start) if scenario else None
    batches = simulation.apply_episode(batches, episode, seed)
    start = first_batch if first_batch is not None else next_batch_number(settings.artifacts_uri)
    ids = [inbox.batch_id(start + i) for i in range(len(batches))]
    published: list[str] = []
    for i, (batch_id, batch) in enumerate(zip(ids, batches, strict=True)):
        deliver(via, batch_id, inbox.split_labels(batch)[0], start + i, service_url, i > 0)
        if i >= label_delay:
            late = inbox.split_labels(batches[i - label_delay])[1]
            deliver_outcomes(via, ids[i - label_delay], late)
        published.append(batch_id)
        drifted = episode is not None and i >= episode.start
        logger.info(
            "published %s (%d encounters%s)",
            batch_id,
            len(batch),
            f", drift {scenario}/{strength}" if drifted else "",
        )
    return {
        "batches": published,
        "episode": episode.to_dict() if episode else None,
        "source": source,
        "via": via if via == "inbox" or service_url else "service stand-in (in-process)",
    }


def next_batch_number(artifacts_uri: str) -> int:
    """One after the highest batch number seen in the inbox or the processed batches."""
    layout = StoreLayout(artifacts_uri)
    names = [
        u.rsplit("/", 1)[1]
        for folder in (layout.inbox_dir(), layout.processed_dir())
        for u in storage.list_files(folder, "batch-*.csv")
    ]
    numbers = [int(n.removeprefix("batch-").removesuffix(".csv")) for n in names]
    return max(numbers, default=0) + 1


if __name__ == "__main__":
    simulation_flow()
