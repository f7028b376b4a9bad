"""Where an experiment lives in the artifact store (`layout.current_experiment` and
`layout.experiment_dir`), and the served rows it judges.

One experiment runs at a time: `experiments/current.json` names it while it runs; its folder
keeps its spec, its decision, the daily looks and the report for good.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from readmit import storage
from readmit.experiments.spec import ExperimentSpec, Mode
from readmit.layout import StoreLayout
from readmit.monitoring import windows
from readmit.monitoring.served import window_id, window_start


class ExperimentStateError(RuntimeError):
    """An experiment cannot start or stop as asked (one is running already, none is)."""


def new_id(now: datetime | None = None) -> str:
    """A sortable, unique experiment id: UTC time and a random suffix."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"exp-{stamp}-{secrets.token_hex(3)}"


def new_spec(mode: Mode, champion: str, challenger: str, share: float, by: str) -> ExperimentSpec:
    """The spec of an experiment starting now."""
    now = datetime.now(UTC)
    return ExperimentSpec(
        id=new_id(now), mode=mode, champion=champion, challenger=challenger, canary_share=share,
        started_at=now.isoformat(timespec="seconds"), started_by=by,
    )  # fmt: skip


def current(layout: StoreLayout) -> ExperimentSpec | None:
    """The running experiment, or None when the champion serves alone."""
    url = layout.current_experiment()
    if not storage.exists(url):
        return None
    return ExperimentSpec.from_dict(storage.read_json(url))


def begin(layout: StoreLayout, spec: ExperimentSpec) -> None:
    """Record a starting experiment (its folder first, then the pointer).

    Raises:
        ExperimentStateError: another experiment is running.
    """
    running = current(layout)
    if running is not None:
        raise ExperimentStateError(
            f"experiment {running.id} ({running.mode}, {running.challenger}) is running: stop it "
            "first (the `experiment` deployment with action=stop)"
        )
    storage.write_json(f"{layout.experiment_dir(spec.id)}/experiment.json", spec.to_dict())
    storage.write_json(layout.current_experiment(), spec.to_dict())


def end(layout: StoreLayout, spec: ExperimentSpec, status: str, reason: str) -> dict[str, Any]:
    """Record how an experiment ended (decided, stopped) and clear the pointer."""
    ended = {**spec.to_dict(), "status": status, "reason": reason,
             "ended_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    storage.write_json(f"{layout.experiment_dir(spec.id)}/experiment.json", ended)
    if storage.exists(layout.current_experiment()):
        storage.remove(layout.current_experiment())
    return ended


def served_rows(layout: StoreLayout, spec: ExperimentSpec, window_s: int) -> pd.DataFrame:
    """Every served row monitoring has kept since the experiment started (all variants)."""
    started = pd.Timestamp(spec.started_at or "1970-01-01T00:00:00+00:00")
    first = window_id(window_start(pd.Series([started]), pd.Timedelta(seconds=window_s)).iloc[0])
    frames = [windows.read_served(bases) for wid, bases in windows.list_windows(layout).items()
              if wid >= first]  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=list(windows.SERVED_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def write_look(
    layout: StoreLayout, spec: ExperimentSpec, result: dict[str, Any], looks: pd.DataFrame,
    html: str,
) -> str:  # fmt: skip
    """Store the latest look (decision.json, looks.csv, report.html); returns the report URL."""
    folder = layout.experiment_dir(spec.id)
    storage.write_json(f"{folder}/decision.json", result)
    storage.write_text(f"{folder}/looks.csv", looks.to_csv(index=False))
    return storage.write_text(f"{folder}/report.html", html)
