"""Benchmark: the feedback loop, from served predictions to the outcomes that judge them.

One function per figure (`FIGURES`), each printing its table and returning its JSON figures;
they share one `Bench` (data, split, model, scorer, built lazily on first use), so a figure that
needs no model costs no training. The last line of stdout is one JSON object.

Figures so far:

`cbpe_backtest`: confidence-based performance estimation (`readmit.monitoring.estimation`)
against the outcomes that arrive later. The production pipeline (`readmit.model.train`, short
search) is fitted on the training patients' cohort rows of the training flow's split
(`data.split_feed`: all encounters, 20% of patients held out, the settings' seed). Windows of
served traffic are drawn from the held-out patients' raw feed rows (identifiers present, every
discharge disposition), scored on the served path without their outcome column (the service's
per-record scorer, `scoring.served_probabilities`), then judged on their cohort rows, as the
registered metrics and monitoring judge them (`data.in_cohort`: died/hospice excluded; the
cohort is known at prediction time from `discharge_disposition_id`). Per window: the CBPE
estimate of ROC AUC and its 90% band, computed from the cohort rows' probabilities alone, then
the realised ROC AUC of the same rows from their true outcomes.

`logging_rps_ratio`: what the prediction log costs the service. The real bento (built with
`bentoml build` and served with `bentoml serve` by `benchmarks/serving.py`'s helpers, default
configuration: 2 workers, adaptive batching) serving the model above, twice side by side: with
the pseudonymised prediction log shipping to a local folder store (the default) and with
READMIT_PREDICTION_LOG_ENABLED=false. Both run at once; `wrk` loads one at a time at
concurrency 8 (the same load as `serving.py`'s c8: real feed rows with their identifiers),
alternating on and off in ABBA order. Each run is reported; the figure is the median c8
requests/s with the log on divided by the median with it off (goal >= 0.9). Checked on the way:
errors are counted, the service answers with the log off, the "on" store holds a row for every
answered request, the "off" store and BentoML's default `./monitoring` folder stay empty.

    .venv/bin/python benchmarks/feedback.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost is imported

import httpx
import numpy as np
import pandas as pd

from readmit import data, features, monitoring, pseudonyms, storage
from readmit.data import outcomes
from readmit.features import PatientHistory, served_history
from readmit.features.history import HISTORY_FEATURES
from readmit.layout import StoreLayout, chunk_relpath
from readmit.model import registry, train
from readmit.monitoring import drift, estimation, served, windows
from readmit.ops import deploy
from readmit.schema import AGE_BANDS, INPUT_COLUMNS, OUTCOME_COLUMNS
from readmit.serving import logged_rows, prediction_log, scoring
from readmit.settings import PROJECT_ROOT, get_settings

SEARCH_BUDGET_S = 30.0
HOLDOUT_FRACTION = 0.2
"""The training flow's default: the windows come from the patients a registered model never saw."""
WINDOW_ROWS = 5000
"""Feed rows per window. The realised AUC of a window has its own noise: about 0.013 (SD) at
5,000 rows and this prevalence, so even a perfect estimate misses it by about 0.01 on average
(0.8 SD). At 2,000 rows that floor would be about 0.017, too close to the 0.02 goal to tell
anything; more rows than 5,000 leave too few distinct windows in a 20,000-row holdout."""
LEVEL = 0.9
N_CLEAN = 8
INPUT_SCENARIOS = ("covariate_shift", "hospital_mix", "missing_surge", "unseen_category")
"""Drift generators that edit inputs and leave outcomes alone (see `input_edit_windows`)."""
CONCEPT_SCENARIOS = ("concept_change", "label_rate")
"""Drift generators that change P(y|x): outcomes are swapped or negatives dropped."""
DRIFT_STRENGTHS: tuple[drift.Strength, ...] = ("moderate", "strong")
CONCEPT_SEEDS = (0, 1)
GOAL_MAE = 0.02


class Bench:
    """What the figures share, each part built on first use."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = round(time.perf_counter() - start, 1)

    @cached_property
    def feed(self) -> pd.DataFrame:
        """The shipped feed, checked against its sha256."""
        start = time.perf_counter()
        frame = data.read_encounters(self.settings.data_uri, self.settings.data_sha256).frame
        self._timed("read_s", start)
        return frame

    @cached_property
    def split(self) -> data.FeedSplit:
        """The training flow's split of the feed (patient-disjoint holdout)."""
        return data.split_feed(
            self.feed, window="all", reference_fraction=self.settings.reference_fraction,
            holdout_fraction=HOLDOUT_FRACTION, seed=self.settings.seed,
        )  # fmt: skip

    @cached_property
    def model(self) -> Any:
        """The production pipeline fitted on the training patients' cohort rows."""
        start = time.perf_counter()
        result = train.train_models(
            self.split.train, seed=self.settings.seed, search_budget_s=SEARCH_BUDGET_S
        )
        self._timed("train_s", start)
        return result.model

    @cached_property
    def scorer(self) -> scoring.Scorer:
        """The service's per-record scorer for the model."""
        return scoring.make_scorer(scoring.single_threaded(self.model))

    def served(self, window: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A window as the service and monitoring see it: probabilities of every row (served
        path, outcomes dropped before scoring), the cohort mask, and the cohort rows' outcomes
        (what arrives later). Mirrors `monitoring.served_batch` with a shared scorer."""
        unlabelled = window.drop(columns=list(OUTCOME_COLUMNS))
        probabilities = scoring.served_probabilities(self.model, unlabelled, self.scorer)
        cohort = data.in_cohort(window)
        return probabilities, cohort, features.make_label(window.loc[cohort], "<30")


# ----------------------------------------------------------------------------------------------
# CBPE backtest
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One window of served traffic: what kind of drift it carries and its feed rows."""

    kind: str
    name: str
    frame: pd.DataFrame


def clean_windows(pool: pd.DataFrame, n: int, seed: int) -> list[Window]:
    """Random samples of whole held-out patients (`drift.sample_batches`)."""
    batches = drift.sample_batches(pool, n, WINDOW_ROWS, seed=seed)
    return [Window("clean", f"clean-{i}", b) for i, b in enumerate(batches)]


def input_edit_windows(pool: pd.DataFrame, seed: int) -> list[Window]:
    """The drift module's input scenarios on fresh clean samples: rows' inputs are edited
    (older age band, emergency admission, another admission source and payer, race missing, an
    unseen admission source) and their outcomes kept. P(y|x) is kept only as far as the edited
    fields do not drive the outcome: an edited row keeps the outcome of its original inputs."""
    names = [(s, strength) for s in INPUT_SCENARIOS for strength in DRIFT_STRENGTHS]
    bases = drift.sample_batches(pool, len(names), WINDOW_ROWS, seed=seed)
    return [
        Window("input_edit", f"{s}-{strength}", drift.inject(b, s, strength, seed=seed + i))
        for i, ((s, strength), b) in enumerate(zip(names, bases, strict=True))
    ]


def _reweighted(pool: pd.DataFrame, weights: np.ndarray, seed: int) -> pd.DataFrame:
    """`WINDOW_ROWS` distinct rows of the pool, each drawn with probability ~ its weight."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(pool), WINDOW_ROWS, replace=False, p=weights / weights.sum())
    return pool.iloc[np.sort(rows)].reset_index(drop=True)


def resampled_windows(pool: pd.DataFrame, seed: int) -> list[Window]:
    """Covariate shift that keeps P(y|x) exactly: rows drawn with weights that depend on their
    inputs only (each row brings its own true outcome). The populations: older and more
    acute (the real counterpart of `covariate_shift`), frequent inpatients, first-time patients
    (no prior inpatient stay), long stays."""
    age = pool["age"].map({band: i for i, band in enumerate(AGE_BANDS)}).fillna(0).to_numpy(float)
    emergency = pool["admission_type_id"].eq(drift.EMERGENCY_ADMISSION_TYPE).fillna(False)
    inpatient = pool["number_inpatient"].fillna(0).to_numpy(float)
    stay = pool["time_in_hospital"].fillna(0).to_numpy(float)
    populations = {
        "older_acute": np.exp(0.4 * age) * np.where(emergency.to_numpy(bool), 2.0, 1.0),
        "frequent_inpatient": 1.0 + 2.0 * np.minimum(inpatient, 4.0),
        "no_prior_inpatient": np.where(inpatient == 0, 4.0, 1.0),
        "long_stays": np.exp(0.2 * stay),
    }
    return [
        Window("resampled", name, _reweighted(pool, w, seed + i))
        for i, (name, w) in enumerate(populations.items())
    ]


def concept_windows(pool: pd.DataFrame, seed: int) -> list[Window]:
    """The drift module's P(y|x) scenarios on fresh clean samples: outcomes swapped between prior
    inpatients and the others (`concept_change`), or negatives dropped (`label_rate`)."""
    names = [
        (s, strength, k) for s in CONCEPT_SCENARIOS for strength in DRIFT_STRENGTHS
        for k in CONCEPT_SEEDS
    ]  # fmt: skip
    bases = drift.sample_batches(pool, len(names), WINDOW_ROWS, seed=seed)
    return [
        Window(s, f"{s}-{strength}-{k}", drift.inject(b, s, strength, seed=seed + i))
        for i, ((s, strength, k), b) in enumerate(zip(names, bases, strict=True))
    ]


def judge_window(bench: Bench, window: Window, seed: int) -> dict[str, Any]:
    """Estimate from the cohort rows' served probabilities, then compare with their outcomes."""
    p, cohort, y = bench.served(window.frame)
    estimate = estimation.estimate_performance(p[cohort], level=LEVEL, seed=seed)
    realised = estimation.realised_performance(p[cohort], y)
    assert estimate.estimated_auc is not None and realised.roc_auc is not None
    return {
        "kind": window.kind,
        "name": window.name,
        "rows": len(window.frame),
        "cohort_rows": int(cohort.sum()),
        "estimated": estimate.estimated_auc,
        "low": estimate.low,
        "high": estimate.high,
        "noise_sd": estimate.auc_std,
        "realised": realised.roc_auc,
        "covered": bool(estimate.covers(realised.roc_auc)),
        "error": abs(estimate.estimated_auc - realised.roc_auc),
        "signed": estimate.estimated_auc - realised.roc_auc,
        "estimated_prevalence": estimate.estimated_prevalence,
        "realised_prevalence": realised.prevalence,
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def cbpe_backtest(bench: Bench) -> dict[str, Any]:
    """Estimated vs realised ROC AUC on clean, covariate-shifted and concept-drift windows."""
    seed = bench.settings.seed
    pool = bench.split.holdout_feed
    bench.scorer  # noqa: B018  (train and compile first: the timing below is scoring only)
    start = time.perf_counter()
    holdout_p, holdout_cohort, holdout_y = bench.served(pool)
    scoring_s = time.perf_counter() - start
    baseline = estimation.realised_performance(holdout_p[holdout_cohort], holdout_y)
    holdout_estimate = estimation.estimate_performance(holdout_p[holdout_cohort], seed=seed)
    assert baseline.roc_auc is not None and holdout_estimate.estimated_auc is not None
    print(
        f"training feed {len(bench.split.train_feed):,} rows ({len(bench.split.train):,} cohort, "
        f"fitted in {bench.timings.get('train_s', 0):.0f}s, search budget {SEARCH_BUDGET_S:.0f}s); "
        f"held-out feed {len(pool):,} rows of "
        f"{pool['patient_nbr'].nunique():,} patients ({int(holdout_cohort.sum()):,} cohort), "
        f"scored on the served path in {scoring_s:.1f}s"
    )
    print(
        f"whole cohort holdout: realised ROC AUC {baseline.roc_auc:.4f}, CBPE estimate "
        f"{holdout_estimate.estimated_auc:.4f} [{holdout_estimate.low:.4f}, "
        f"{holdout_estimate.high:.4f}]; mean p {holdout_estimate.estimated_prevalence:.4f} vs "
        f"observed {baseline.prevalence:.4f}"
    )
    print(
        f"\nwindows: {WINDOW_ROWS:,} feed rows each, drawn by whole patients from the held-out "
        f"feed ({len(pool):,} rows, so about {len(pool) // WINDOW_ROWS} disjoint windows: "
        "windows are independent draws and overlap, each a random sample of the pool; an "
        "overlap correlates windows' errors, it does not bias them). Estimate and realised AUC "
        "on each window's cohort rows (died/hospice excluded, as the registered metrics)."
    )
    windows = [
        *clean_windows(pool, N_CLEAN, seed=seed + 1),
        *input_edit_windows(pool, seed=seed + 100),
        *resampled_windows(pool, seed=seed + 200),
        *concept_windows(pool, seed=seed + 300),
    ]
    rows = [judge_window(bench, w, seed + i) for i, w in enumerate(windows)]
    print(f"\n{'kind':<15}{'window':<28}{'cohort':>7}{'estimated':>10}{'band (90%)':>18}"
          f"{'realised':>10}{'error':>8}  in band  {'mean p':>7}{'observed':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['kind']:<15}{r['name']:<28}{r['cohort_rows']:>7,}{r['estimated']:>10.4f}"
              f"   [{r['low']:.4f}, {r['high']:.4f}]{r['realised']:>10.4f}{r['error']:>8.4f}  "
              f"{'yes' if r['covered'] else 'NO':<7}  {r['estimated_prevalence']:>7.4f}"
              f"{r['realised_prevalence']:>9.4f}")  # fmt: skip

    shifted = [r for r in rows if r["kind"] in ("clean", "input_edit", "resampled")]
    concept = [r for r in rows if r["kind"] in CONCEPT_SCENARIOS]
    by_kind = {
        k: [r for r in rows if r["kind"] == k] for k in dict.fromkeys(r["kind"] for r in rows)
    }
    floor = float(np.sqrt(2 / np.pi)) * _mean(shifted, "noise_sd")
    mae = _mean(shifted, "error")
    print(f"\n{'kind':<15}{'windows':>8}{'MAE AUC':>9}{'in band':>9}{'mean |p-obs|':>14}")
    for kind, group in by_kind.items():
        gap = np.mean([abs(r["estimated_prevalence"] - r["realised_prevalence"]) for r in group])
        print(f"{kind:<15}{len(group):>8}{_mean(group, 'error'):>9.4f}"
              f"{np.mean([r['covered'] for r in group]):>9.2f}{gap:>14.4f}")  # fmt: skip
    print(
        f"\nclean + covariate-shifted windows: MAE {mae:.4f} (goal <= {GOAL_MAE}); label noise "
        f"alone: realised AUC SD {_mean(shifted, 'noise_sd'):.4f} per window, so a perfect "
        f"estimate would still show MAE about {floor:.4f}; mean estimated - realised "
        f"{_mean(shifted, 'signed'):+.4f}"
    )

    # What labelled monitoring catches and estimation cannot: the same tolerance on both.
    tolerance = drift.PerformanceTolerance().auc_drop
    changed = by_kind.get("concept_change", [])
    realised_drop = baseline.roc_auc - _mean(changed, "realised")
    estimated_drop = baseline.roc_auc - _mean(changed, "estimated")
    flagged_realised = sum(baseline.roc_auc - r["realised"] > tolerance for r in changed)
    flagged_estimate = sum(baseline.roc_auc - r["estimated"] > tolerance for r in changed)
    rate = by_kind.get("label_rate", [])
    rate_gap = _mean(rate, "realised_prevalence") - _mean(rate, "estimated_prevalence")
    print(
        f"concept_change windows vs the holdout's realised AUC {baseline.roc_auc:.4f}: realised "
        f"drop {realised_drop:.4f}, estimated drop {estimated_drop:.4f}; with monitoring's "
        f"tolerance ({tolerance}), realised AUC flags {flagged_realised} of {len(changed)}, the "
        f"estimate {flagged_estimate}. label_rate windows (prior shift: ranking intact): "
        f"observed rate exceeds the mean prediction by {rate_gap:.4f}, visible only in outcomes."
    )
    figures: dict[str, Any] = {
        "cbpe_mae_auc": round(mae, 4),
        "cbpe_mae_auc_concept": round(_mean(concept, "error"), 4),
        "cbpe_band_coverage": round(float(np.mean([r["covered"] for r in shifted])), 3),
        "cbpe_band_coverage_concept": round(float(np.mean([r["covered"] for r in concept])), 3),
        "cbpe_band_level": LEVEL,
        "cbpe_mae_noise_floor": round(floor, 4),
        "cbpe_bias_auc": round(_mean(shifted, "signed"), 4),
        "n_windows": len(rows),
        "window_rows": WINDOW_ROWS,
        **{f"cbpe_mae_auc_{kind}": round(_mean(g, "error"), 4) for kind, g in by_kind.items()},
        **{f"n_windows_{kind}": len(g) for kind, g in by_kind.items()},
        "concept_change_realised_auc_drop": round(realised_drop, 4),
        "concept_change_estimated_auc_drop": round(estimated_drop, 4),
        "concept_change_flagged_realised": flagged_realised,
        "concept_change_flagged_estimate": flagged_estimate,
        "label_rate_prevalence_gap": round(rate_gap, 4),
        "holdout_realised_auc": round(baseline.roc_auc, 4),
        "holdout_estimated_auc": round(holdout_estimate.estimated_auc, 4),
    }
    return figures


# ----------------------------------------------------------------------------------------------
# Prediction-log cost
# ----------------------------------------------------------------------------------------------

LOG_ROUNDS = 4
"""On/off pairs, in ABBA order (on off, off on, on off, off on): a slow drift of the shared
machine weighs on both sides alike. With 2 workers a run's c8 also depends on how wrk's 8
connections land on the workers (benchmarks/serving.py saw 704 to 1,627 req/s), so one run says
little: the figure is the ratio of the medians."""
LOG_RUN_SECONDS = 10.0
LOG_CONCURRENCY = 8
GOAL_LOG_RATIO = 0.9


def _served_model_store(bench: Bench) -> tuple[str, str]:
    """The figures' model, registered in a store of its own (the project's stays untouched) and
    packed into a bento; (model tag, bento tag)."""
    home = tempfile.mkdtemp(prefix="readmit-bench-store-")
    os.environ["READMIT_BENTOML_HOME"] = os.environ["BENTOML_HOME"] = home
    get_settings.cache_clear()
    settings = get_settings()
    metadata = {
        "threshold": float(bench.model.threshold_),
        "label_definition": "<30",
        "metrics": {},
        "trained_at": "benchmarks/feedback.py",
        "feature_names": list(INPUT_COLUMNS),
    }
    tag = registry.save_model(bench.model, metadata, stage="candidate", settings=settings)
    start = time.perf_counter()
    bento = deploy.build_bento(tag, settings)
    bench._timed("bento_build_s", start)
    return tag, bento


def _rows_in(log_dir: Path) -> int:
    """Rows shipped below a prediction-log folder (0 when it does not exist)."""
    good, bad = served.read_chunks(served.list_chunks(str(log_dir)), str(log_dir / "bad"))
    assert not bad, bad
    return sum(len(frame) for _, frame in good)


def logging_rps_ratio(bench: Bench) -> dict[str, Any]:
    """c8 requests/s of the bento with the prediction log on over the same bento with it off."""
    import serving as serving_bench  # benchmarks/serving.py, beside this file

    _, bento = _served_model_store(bench)
    frame, bodies = serving_bench.encounter_rows(2000, seed=bench.settings.seed)
    for body, encounter_id in zip(bodies, frame["encounter_id"], strict=True):
        body["encounter_id"] = int(encounter_id)  # a feed row as sent: both identifiers
    run_dir = Path(tempfile.mkdtemp(prefix="readmit-bench-log-"))
    script = serving_bench.wrk_script(bodies, run_dir)
    default_monitoring = PROJECT_ROOT / "monitoring"  # where BentoML's own backend would write
    monitoring_existed = default_monitoring.exists()
    base = serving_bench.bento_env(run_dir, get_settings().serve_workers, True)
    envs = {
        "on": {**base, "READMIT_PREDICTION_LOG_URI": str(run_dir / "plogs-on")},
        "off": {
            **base,
            "READMIT_PREDICTION_LOG_URI": str(run_dir / "plogs-off"),
            "READMIT_PREDICTION_LOG_ENABLED": "false",
        },
    }
    servers: dict[str, tuple[int, str]] = {}
    runs: list[dict[str, Any]] = []
    try:
        for side, env in envs.items():
            servers[side] = serving_bench.serve_bento(bento, run_dir / side, env)
        order = [("on", "off") if r % 2 == 0 else ("off", "on") for r in range(LOG_ROUNDS)]
        for round_no, sides in enumerate(order, start=1):
            for side in sides:
                url = f"{servers[side][1]}/predict"
                result = serving_bench.load(url, script, LOG_CONCURRENCY, LOG_RUN_SECONDS)
                runs.append({"round": round_no, "log": side, **result})
                print(f"round {round_no} log {side:<3} c{LOG_CONCURRENCY}: {result['rps']:>8,.1f} "
                      f"req/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                      f"{result['requests']:,} requests, {result['errors']} errors")  # fmt: skip
    finally:
        for pid, _ in servers.values():
            deploy.stop_server(pid)  # SIGTERM: the "on" server ships what it has queued
    rps = {side: [r["rps"] for r in runs if r["log"] == side] for side in envs}
    pairs = [
        on["rps"] / off["rps"]
        for on, off in zip(
            [r for r in runs if r["log"] == "on"], [r for r in runs if r["log"] == "off"],
            strict=True,
        )
    ]  # fmt: skip
    ratio = statistics.median(rps["on"]) / statistics.median(rps["off"])
    rows_on, rows_off = _rows_in(run_dir / "plogs-on"), _rows_in(run_dir / "plogs-off")
    answered_on = sum(r["requests"] - r["errors"] for r in runs if r["log"] == "on")
    errors = sum(r["errors"] for r in runs)
    wrote_default = default_monitoring.exists() and not monitoring_existed
    print(
        f"\nlog on: median {statistics.median(rps['on']):,.1f} req/s; log off: median "
        f"{statistics.median(rps['off']):,.1f} req/s; ratio {ratio:.3f} (goal >= "
        f"{GOAL_LOG_RATIO}); per round {', '.join(f'{p:.3f}' for p in pairs)}. Log on shipped "
        f"{rows_on:,} rows for {answered_on:,} answered measured requests (plus warm-ups); "
        f"log off shipped {rows_off} rows; errors {errors}"
    )
    assert min(rps["off"]) > 0, "the service did not answer with logging off"
    assert rows_off == 0 and not wrote_default, "the log was written with logging off"
    assert rows_on >= answered_on, "the log lost rows"
    return {
        "logging_rps_ratio": round(ratio, 3),
        "logging_rps_ratio_by_round": [round(p, 3) for p in pairs],
        "logging_rps_on_c8": rps["on"],
        "logging_rps_off_c8": rps["off"],
        "logging_p50_ms_on_c8": [r["p50_ms"] for r in runs if r["log"] == "on"],
        "logging_p50_ms_off_c8": [r["p50_ms"] for r in runs if r["log"] == "off"],
        "logging_rows_shipped_on": rows_on,
        "logging_rows_shipped_off": rows_off,
        "logging_errors": errors,
        "logging_run_seconds": LOG_RUN_SECONDS,
    }


# ----------------------------------------------------------------------------------------------
# Monitoring of served traffic: cost, latency, history parity
# ----------------------------------------------------------------------------------------------

MONITOR_CHUNK_ROWS = 2000
"""Rows per shipped chunk (a busy worker's flush)."""
MONITOR_WINDOW_ROWS = 20_000
"""Rows per monitoring window (the windows are an hour long; this is an hour's traffic)."""
GOAL_MONITOR_100K_S = 10.0
GOAL_SCALING = 4.4


def _reference(bench: Bench, store: str) -> Any:
    """The model's monitoring reference, written as the training flow writes it."""
    uris = monitoring.ReferenceUris.for_model(store, "bench")
    monitoring.build_reference(
        uris, bench.split.train_feed, bench.split.holdout_feed, bench.model, "<30"
    )
    return monitoring.load_reference(uris)


def _logged_rows(bench: Bench) -> list[dict[str, Any]]:
    """The holdout feed's rows exactly as the service logs them (scored once on the served
    path); replicated with new times to make any volume of traffic."""
    feed = bench.split.holdout_feed.drop(columns=list(OUTCOME_COLUMNS))
    key = bench.settings.pseudonym_key_bytes
    records = scoring.pseudonymised(scoring.feed_records(feed), key)
    p = np.asarray(bench.scorer.predict_proba_many(records), dtype=float)
    risks = scoring.risk_labels(p, float(bench.model.threshold_)).tolist()
    return logged_rows(records, p.tolist(), risks, "readmission:bench", "")


def _ship_traffic(rows: list[dict[str, Any]], log_uri: str, n_rows: int, t0: datetime) -> int:
    """`n_rows` logged rows as chunks of `MONITOR_CHUNK_ROWS`, `MONITOR_WINDOW_ROWS` per hour."""
    step = timedelta(hours=1) / MONITOR_WINDOW_ROWS
    chunks = 0
    for first in range(0, n_rows, MONITOR_CHUNK_ROWS):
        at = t0 + first * step
        body = []
        for i in range(first, min(first + MONITOR_CHUNK_ROWS, n_rows)):
            body.append({**rows[i % len(rows)], "timestamp": (t0 + i * step).isoformat()})
        url = f"{log_uri}/{chunk_relpath(at, 'bench-w0-p0', chunks + 1)}"
        storage.write_bytes(url, prediction_log.encode_chunk(body))
        chunks += 1
    return chunks


def _monitor_once(bench: Bench, reference: Any, store: str, log_uri: str) -> dict[str, Any]:
    """One monitoring run over everything shipped: read, piece, profile, skew-check, assess."""
    layout = StoreLayout(store)
    settings = bench.settings
    start = time.perf_counter()
    read, _ = windows.read_new_chunks(
        layout, log_uri, {}, model=bench.model, window=timedelta(hours=1),
        grace=timedelta(seconds=settings.log_grace_seconds),
        skew_rows=settings.skew_rows_per_chunk,
    )  # fmt: skip
    read_s = time.perf_counter() - start
    assessed = windows.assess_stored_windows(
        layout, reference, windows.touched(read.pieces), outcomes.read_received(store), "<30",
        model_tag="readmission:bench",
    )  # fmt: skip
    total = time.perf_counter() - start
    assert not read.bad and all(a.skew.ok for a in assessed), "skew or unreadable chunks"
    return {"rows": read.rows, "chunks": len(read.chunks), "windows": len(assessed),
            "read_s": round(read_s, 2), "total_s": round(total, 2)}  # fmt: skip


def monitoring_cost(bench: Bench) -> dict[str, Any]:
    """Seconds to monitor 100,000 and 400,000 logged rows (chunks read once, per-chunk
    profiles merged into hourly windows, skew re-score, assessment); the ratio shows whether
    the cost is linear."""
    rows = _logged_rows(bench)
    reference = _reference(bench, tempfile.mkdtemp(prefix="readmit-bench-ref-"))
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    runs = {}
    for n in (100_000, 400_000):
        root = Path(tempfile.mkdtemp(prefix=f"readmit-bench-monitor-{n}-"))
        _ship_traffic(rows, str(root / "logs"), n, t0)
        runs[n] = _monitor_once(bench, reference, str(root / "store"), str(root / "logs"))
        print(f"monitoring {n:,} logged rows: {runs[n]['chunks']} chunks, {runs[n]['windows']} "
              f"windows, {runs[n]['total_s']:.1f} s (reading and profiling "
              f"{runs[n]['read_s']:.1f} s)")  # fmt: skip
    ratio = runs[400_000]["total_s"] / runs[100_000]["total_s"]
    print(f"400k / 100k: {ratio:.2f} (goal <= {GOAL_SCALING}); 100k in "
          f"{runs[100_000]['total_s']:.1f} s (goal <= {GOAL_MONITOR_100K_S})")  # fmt: skip
    return {
        "monitor_100k_rows_s": runs[100_000]["total_s"],
        "monitor_400k_rows_s": runs[400_000]["total_s"],
        "monitor_scaling": round(ratio, 2),
        "monitor_runs": {str(k): v for k, v in runs.items()},
    }


def request_to_monitor(bench: Bench) -> dict[str, Any]:
    """From a request answered by the real bento to its row in a monitoring window: the
    service's flush, the store, and one monitoring read (run back to back, as a schedule would
    run it at its next tick; add the schedule's interval for the worst case)."""
    import serving as serving_bench  # benchmarks/serving.py, beside this file

    _, bento = _served_model_store(bench)
    run_dir = Path(tempfile.mkdtemp(prefix="readmit-bench-latency-"))
    store = str(run_dir / "store")
    env = {**serving_bench.bento_env(run_dir, 1, True), "READMIT_ARTIFACTS_URI": store}
    env.pop("READMIT_PREDICTION_LOG_URI", None)
    pid, url = serving_bench.serve_bento(bento, run_dir / "server", env)
    layout = StoreLayout(store)
    feed = bench.split.holdout_feed.drop(columns=list(OUTCOME_COLUMNS))
    latencies = []
    state: dict[str, Any] = {}
    try:
        for i in range(5):
            body = scoring.feed_records(feed.iloc[[i]])[0]
            key = pseudonyms.pseudonym(bench.settings.pseudonym_key_bytes, "encounter_id",
                                       body["encounter_id"])  # fmt: skip
            sent = time.perf_counter()
            response = httpx.post(f"{url}/predict", json=body, timeout=30)
            response.raise_for_status()
            seen = None
            while seen is None and time.perf_counter() - sent < 30:
                read, state = windows.read_new_chunks(
                    layout, layout.prediction_logs(), state, model=None,
                    window=timedelta(hours=1), grace=timedelta(minutes=10), skew_rows=0,
                )  # fmt: skip
                if any(key in set(p.served["encounter_key"]) for p in read.pieces):
                    seen = time.perf_counter() - sent
                else:
                    time.sleep(0.1)
            assert seen is not None, "the request never reached a monitoring window"
            latencies.append(round(seen, 2))
            time.sleep(1.0)
    finally:
        deploy.stop_server(pid)
    flush = bench.settings.log_flush_seconds
    print(f"request -> monitoring window: {latencies} s (flush interval {flush} s, plus the "
          "monitoring schedule's interval at worst)")  # fmt: skip
    return {
        "request_to_monitor_s": statistics.median(latencies),
        "request_to_monitor_runs_s": latencies,
        "request_to_monitor_flush_s": flush,
    }


def history_parity(bench: Bench) -> dict[str, Any]:
    """Do served history features equal training's for the same encounters?

    Served: the later encounters of patients the model was trained on, scored one at a time in
    time order with the served-history store attached, each recorded in the store after it is
    scored (as monitoring records what the service logged). Training: the history a model
    trained on all of them gives the same encounters. Also shown: the model's store alone (no
    served history), as before the store followed production."""
    settings = bench.settings
    split = data.split_feed(
        bench.feed, window="reference", reference_fraction=settings.reference_fraction,
        holdout_fraction=HOLDOUT_FRACTION, seed=settings.seed,
    )  # fmt: skip
    key = settings.pseudonym_key_bytes
    later = data.reference_and_batches(bench.feed, settings.reference_fraction, 10**9)[1][0]
    known = later[later["patient_nbr"].isin(split.train["patient_nbr"])]
    keyed = pseudonyms.add_keys(known, key)
    model_only = PatientHistory(pseudonyms.fingerprint(key)).fit(
        pseudonyms.add_keys(split.train, key)
    )
    alone = model_only.transform(keyed)[list(HISTORY_FEATURES)].to_numpy()
    store = served_history.open_store(
        f"sqlite://{Path(tempfile.mkdtemp(prefix='readmit-bench-history-')) / 'served.sqlite'}"
    )
    served_path = copy.deepcopy(model_only).attach(store)
    start = time.perf_counter()
    stamps = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(range(len(keyed)), unit="s")
    rows = served_history.served_rows(keyed.assign(timestamp=stamps))
    states = []
    for i, (pkey, ekey) in enumerate(
        zip(keyed["patient_key"], keyed["encounter_key"], strict=True)
    ):
        states.append(served_path.lookup(pkey, ekey))
        store.add(rows[i : i + 1])
    served_s = time.perf_counter() - start
    everything = pseudonyms.add_keys(pd.concat([split.train, known], ignore_index=True), key)
    trained = PatientHistory(pseudonyms.fingerprint(key)).fit(everything)
    training_history = trained.transform(keyed)[list(HISTORY_FEATURES)].to_numpy()
    equal = (np.asarray(states) == training_history).all(axis=1)
    equal_alone = (alone == training_history).all(axis=1)
    print(f"history parity: {equal.sum():,} of {len(equal):,} later encounters of known patients "
          f"({equal.mean():.1%}) get the history training gives them with the served-history "
          f"store ({served_s / len(equal) * 1000:.2f} ms per lookup and record); with the model's "
          f"store alone {equal_alone.mean():.1%}")  # fmt: skip
    return {"history_parity": bool(equal.all()),
            "history_parity_share": round(float(equal.mean()), 4),
            "history_parity_share_model_store_only": round(float(equal_alone.mean()), 4),
            "history_parity_encounters": len(equal)}  # fmt: skip


FIGURES: tuple[Callable[[Bench], dict[str, Any]], ...] = (
    cbpe_backtest, logging_rps_ratio, monitoring_cost, request_to_monitor, history_parity,
)  # fmt: skip
"""One function per figure group (`--only NAME` runs some)."""


def main(argv: list[str] | None = None) -> None:
    names = [figure.__name__ for figure in FIGURES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(names)}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    start = time.perf_counter()
    bench = Bench()
    figures: dict[str, Any] = {}
    for figure in FIGURES:
        if not args.only or figure.__name__ in args.only:
            figures.update(figure(bench))
    print(
        json.dumps({**figures, **bench.timings, "bench_s": round(time.perf_counter() - start, 1)})
    )


if __name__ == "__main__":
    main()
