"""Monitoring flow: what the service served, and the feed batches dropped in the inbox.

Served traffic: new prediction-log chunks are read once and cut into time windows; outcomes
dropped in `outcomes/inbox/` are validated, pseudonymised and stored; each window touched by new
rows or new outcomes is assessed (drift, estimated and realised performance, label coverage,
skew). Inbox batches: validated, profiled and scored for drift; labelled batches for realised
performance. Drift or a performance drop emits `readmit.drift.detected` (once per cooldown),
which the `retraining` deployment is triggered by.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from readmit import data, monitoring, storage
from readmit.data import inbox, outcomes, validation
from readmit.model import registry
from readmit.monitoring import drift, windows
from readmit.ops import audit
from readmit.reports import report
from readmit.serving import prediction_log_uri
from readmit.settings import get_settings

DRIFT_EVENT = "readmit.drift.detected"


@task(cache_policy=NO_CACHE)
def load_champion() -> tuple[registry.LoadedModel, monitoring.Reference] | None:
    """The production model and its monitoring reference (None if nothing is in production)."""
    settings = get_settings()
    try:
        loaded = registry.load_model()
    except registry.NoModelError as exc:
        get_run_logger().warning("nothing to monitor: %s", exc)
        return None
    uris = monitoring.ReferenceUris.for_model(settings.artifacts_uri, loaded.version)
    return loaded, monitoring.load_reference(uris)


@task(cache_policy=NO_CACHE)
def take_batch(batch_id: str) -> Any:
    """Validate an inbox batch; an invalid one is quarantined (and audited), never monitored."""
    settings = get_settings()
    where = inbox.paths(settings.artifacts_uri, batch_id)
    raw = storage.read_bytes(where.inbox)
    try:
        frame = validation.validate_or_quarantine(
            data.decompress(raw),
            artifacts_uri=settings.artifacts_uri,
            batch_name=batch_id,
            require_label=False,
            raw=raw,
        )
    except validation.ValidationFailed as exc:
        get_run_logger().error("%s quarantined: %s", batch_id, exc)
        audit.append(
            settings.artifacts_uri,
            "batch_quarantined",
            batch_id=batch_id,
            quarantine=exc.quarantine_uri,
            failures=len(exc.result.failures),
        )
        inbox.discard(settings.artifacts_uri, batch_id)
        return None
    return frame


@task(cache_policy=NO_CACHE)
def assess_batch(
    champion: tuple[registry.LoadedModel, monitoring.Reference],
    batch_id: str,
    frame: Any,
    labelled: bool,
) -> drift.DriftReport:
    """Drift report of one feed batch, scored as served; with labels, realised performance on
    its cohort rows too. Stored as JSON + HTML."""
    loaded, reference = champion
    label = loaded.metadata.get("label_definition", "<30") if labelled else None
    probabilities, labels, cohort = monitoring.served_batch(loaded.model, frame, label)
    name = f"{batch_id}-labelled" if labelled else batch_id
    result = monitoring.monitor_batch(reference, name, frame, probabilities, labels, cohort)
    folder = get_settings().layout.drift_report_dir(name)
    storage.write_json(f"{folder}/drift.json", result.to_dict())
    storage.write_text(
        f"{folder}/drift.html",
        report.render_drift_report_html(result, f"Drift: {name} vs {loaded.tag}"),
    )
    get_run_logger().info(
        "%s: severity %s%s%s",
        name,
        result.severity,
        f" ({', '.join(result.responsible[:5])})" if result.responsible else "",
        " - PERFORMANCE DROP" if result.performance_drop else "",
    )
    return result


@task(cache_policy=NO_CACHE)
def read_served_traffic(
    champion: tuple[registry.LoadedModel, monitoring.Reference], state: dict[str, Any]
) -> tuple[windows.Ingested, dict[str, Any]]:
    """New prediction-log chunks, cut into window pieces and stored; the state moves on."""
    settings, logger = get_settings(), get_run_logger()
    read, state = windows.read_new_chunks(
        settings.layout,
        prediction_log_uri(settings),
        state,
        model=champion[0].model,
        window=timedelta(seconds=settings.monitor_window_seconds),
        grace=timedelta(seconds=settings.log_grace_seconds),
        skew_rows=settings.skew_rows_per_chunk,
        store_uri=settings.history_store_uri,
        dask_address=settings.dask_address,
        model_tag=champion[0].tag,
    )
    for bad in read.bad:
        logger.error("prediction-log chunk %s set aside: %s", bad.name, bad.reason)
    logger.info(
        "served traffic: %d new chunks, %d rows, %d windows touched, %d chunks set aside",
        len(read.chunks), read.rows, len(windows.touched(read.pieces)), len(read.bad),
    )  # fmt: skip
    return read, state


@task(cache_policy=NO_CACHE)
def take_outcomes() -> list[outcomes.OutcomesReport]:
    """Outcomes files dropped in the store: stored (pseudonymised) or quarantined, then removed."""
    settings, logger = get_settings(), get_run_logger()
    taken = []
    drops = outcomes.pending_drops(settings.artifacts_uri)
    served = windows.served_encounter_keys(settings.layout) if drops else set()
    for url in drops:
        name = url.rsplit("/", 1)[-1]
        try:
            received = outcomes.add_outcomes(
                storage.read_bytes(url), source=name, artifacts_uri=settings.artifacts_uri,
                key=settings.pseudonym_key_bytes, served_keys=served,
            )  # fmt: skip
        except validation.ValidationFailed as exc:
            logger.error("outcomes file %s quarantined: %s", name, exc)
        else:
            logger.info("%s", received.summary())
            taken.append(received)
        storage.remove(url)
    return taken


@task(cache_policy=NO_CACHE)
def assess_windows(
    champion: tuple[registry.LoadedModel, monitoring.Reference], window_ids: list[str]
) -> list[windows.WindowAssessment]:
    """Assess windows of served traffic; each assessment is stored as JSON + HTML."""
    settings, logger = get_settings(), get_run_logger()
    loaded, reference = champion
    assessed = windows.assess_stored_windows(
        settings.layout, reference, window_ids, outcomes.read_received(settings.artifacts_uri),
        loaded.metadata.get("label_definition", "<30"), model_tag=loaded.tag,
        skew_tolerance=settings.skew_tolerance,
    )  # fmt: skip
    for result in assessed:
        logger.info("window %s: %s", result.window, result.summary())
    return assessed


def publish(reports: list[drift.DriftReport], served: list[dict[str, Any]]) -> None:
    """Prefect artifacts: served windows (estimated vs realised AUC), a summary table, the worst
    report's feature table, report links."""
    layout = get_settings().layout
    if served:
        create_table_artifact(
            key="served-windows",
            table=served,
            description="Served traffic per window: drift, estimated AUC (90% band) before "
            "outcomes, realised AUC once they arrive, label coverage, skew check",
        )
    create_table_artifact(
        key="drift-summary",
        table=[r.summary() for r in reports],
        description="Per batch or served window: severity, responsible features, performance",
    )
    worst = max(reports, key=lambda r: (r.alert, r.severity.rank))
    create_table_artifact(
        key="drift-features",
        table=worst.table_rows(),
        description=f"Feature drift of {worst.batch_id} (worst of this run)",
    )
    links = "\n".join(
        f"- `{r.batch_id}`: **{r.severity}** - `{report_url(layout, r.batch_id)}`" for r in reports
    )
    create_markdown_artifact(
        key="drift-reports",
        markdown=("## Drift reports (self-contained HTML, render offline)\n\n" + links),
    )


def report_url(layout: Any, batch_id: str) -> str:
    """Where a report's HTML is: a served window's assessment, or a batch's drift report."""
    if batch_id.startswith(windows.SERVED_PREFIX):
        return f"{layout.window_dir(batch_id.removeprefix(windows.SERVED_PREFIX))}/assessment.html"
    return f"{layout.drift_report_dir(batch_id)}/drift.html"


def maybe_emit(
    loaded: registry.LoadedModel,
    alerts: list[drift.DriftReport],
    state: dict[str, Any],
    cooldown_s: float,
) -> bool:
    """Emit `readmit.drift.detected` unless an event was emitted within the cooldown."""
    settings, logger = get_settings(), get_run_logger()
    now = datetime.now(UTC)
    if not monitoring.cooldown_allows(state.get("last_event_at"), now, cooldown_s):
        logger.info(
            "drift persists; event suppressed by the cooldown (last %s)", state["last_event_at"]
        )
        return False
    worst = max(alerts, key=lambda r: r.severity.rank)
    payload = {
        "severity": str(worst.severity),
        "features": sorted({f for r in alerts for f in r.responsible})[:20],
        "batch_ids": [r.batch_id for r in alerts],
        "performance_drop": any(r.performance_drop for r in alerts),
        "model_tag": loaded.tag,
    }
    emit_event(
        DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"readmit.model.{loaded.tag}",
            "prefect.resource.name": loaded.tag,
        },
        payload=payload,
    )
    audit.append(settings.artifacts_uri, "drift_detected", **payload)
    state["last_event_at"] = now.isoformat(timespec="seconds")
    logger.warning("emitted %s: %s", DRIFT_EVENT, payload)
    return True


@flow(name="monitoring", log_prints=True)
def monitoring_flow(max_batches: int = 20, cooldown_s: float = 1800.0) -> dict[str, Any]:
    """Monitor new inbox batches and newly labelled batches against the production model.

    Args:
        max_batches: At most this many inbox batches per run (the rest wait for the next run).
        cooldown_s: After a drift event, further alerts within this time emit no new event.
    """
    settings = get_settings()
    champion = load_champion()
    if champion is None:
        return {"batches": [], "event": False, "reason": "no production model"}
    state_url = settings.layout.monitoring_state()
    state = monitoring.read_state(state_url)
    served, state = read_served_traffic(champion, state)
    arrived = take_outcomes()
    newest = outcomes.newest_received(settings.artifacts_uri)  # by the CLI or the drop folder
    new_outcomes, state["outcomes_newest"] = newest != state.get("outcomes_newest"), newest
    served_windows = assess_windows(
        champion, windows.windows_to_assess(settings.layout, served.pieces, new_outcomes)
    )
    reports = [w.report for w in served_windows]
    raised: set[str] = set()  # alerts an event (or the cooldown) already covered
    event = False
    for batch_id in inbox.pending(settings.artifacts_uri)[:max_batches]:
        frame = take_batch(batch_id)
        if frame is not None:
            reports.append(assess_batch(champion, batch_id, frame, labelled=False))
            if reports[-1].alert:  # before the batch leaves the inbox: no run assesses it again
                alerts = [r for r in reports if r.alert and r.batch_id not in raised]
                event = maybe_emit(champion[0], alerts, state, cooldown_s) or event
                raised.update(r.batch_id for r in alerts)
                storage.write_json(state_url, state)  # the cooldown survives a failed run
            inbox.mark_processed(settings.artifacts_uri, batch_id)
    assessed = set(state.get("labelled_assessed", []))
    for batch_id in inbox.labelled_batches(settings.artifacts_uri):
        if batch_id not in assessed:
            frame = inbox.load_labelled(settings.artifacts_uri, batch_id)
            reports.append(assess_batch(champion, batch_id, frame, labelled=True))
            assessed.add(batch_id)
    state["labelled_assessed"] = sorted(assessed)
    alerts = [r for r in reports if r.alert and r.batch_id not in raised]
    event = (bool(alerts) and maybe_emit(champion[0], alerts, state, cooldown_s)) or event
    state["last_success_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    storage.write_json(state_url, state)
    if reports:
        publish(reports, [w.summary() for w in served_windows])
    monitoring.push_metrics(settings.pushgateway_url, reports, champion[0].tag, served_windows)
    return {
        "batches": [
            r.summary() for r in reports if not r.batch_id.startswith(windows.SERVED_PREFIX)
        ],
        "windows": [w.summary() for w in served_windows],
        "outcomes": [o.to_dict() for o in arrived],
        "event": event,
        "model_tag": champion[0].tag,
    }


if __name__ == "__main__":
    monitoring_flow()
