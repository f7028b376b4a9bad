"""Benchmark: live model experiments (issue 14), the statistics that decide them.

`statistics`: simulated experiments with a KNOWN truth (`readmit.experiments.simulation`: true
risk with ROC AUC 0.70 at base rate 0.11, a calibrated champion at 0.68, challengers of known
quality), looked at after every daily batch of matured outcomes (about 28 a day) by the
anytime-valid test the experiment flow runs (`readmit.experiments.sequential`), until it
decides or reaches one year of encounters (`max_n`, 10,177). Per scenario, `--experiments`
experiments (default 400):

* `aa_false_positive_rate`: A/A shadow experiments (a second model of the champion's quality,
  independent noise) that decided anything (goal <= 0.05), split into `aa_decided_better` and
  `aa_decided_worse`;
* `power_auc_plus_0_01`: shadow experiments of a challenger better by 0.01 ROC AUC that decided
  `challenger_better` within the year (goal >= 0.8), `median_outcomes_to_decision` for those;
* `harm_stop_rate`: a challenger worse by 0.02 AUC stopped as `challenger_worse`;
  `harm_stop_rate_miscalibrated`: the champion's AUC with probabilities 35% too high in odds;
* `canary_*`: the same with a 50% canary (unpaired), plus `canary_harm_stop_rate_broken`
  (probabilities 2.7 times too high in odds: what a canary is for);
* the challengers' AUC differences MEASURED: on the population without label noise
  (`challenger_auc_diff_true`) and realised in the simulated years (`..._realised`);
* the figures for both metrics: unprefixed for the default (`sequential.DEFAULT_METRIC`), the
  other prefixed (`brier_...`);
* sensitivity, default metric: power at two and three years of encounters, and with models
  whose errors are correlated (`shared_noise` 0.8: prediction correlation about 0.96, typical
  of a challenger retrained on the same features, against 0.85 with independent noise).

`realism`: which case a real retraining is in. A real champion (the project's features and
XGBoost on the oldest 30,000 encounters) and a real retrained challenger (45,000: the same plus
what came after) score 10,000 later encounters of other patients; their prediction correlation
is measured, the simulation's model errors are correlated to match it (`shared_noise`, closest
on a grid), and the A/A rate and power for +0.01 AUC are run there
(`power_auc_plus_0_01_matched`).

`serving`: what a live experiment costs the service. Two models of production size (the
project's feature pipeline with XGBoost, 300 and 400 trees, fitted on 30,000 encounters), in a
model store of their own (the project's stays untouched), packed by the same `bentoml build`
(`readmit.ops.deploy.build_bento`) into three bentos: the champion alone, a shadow experiment
and a 10% canary (`readmit.experiments.spec.ExperimentSpec`). The three run side by side with
`bentoml serve` (one worker each: with two, where `wrk`'s keep-alive connections land decides a
run's p50 by up to 2x, benchmarks/serving.py; adaptive batching and the prediction log on, as
deployed); `wrk` loads one at a time at concurrency 8 on /predict with the same request set
(2,000 real raw feed rows with both identifiers, benchmarks/serving.py's `encounter_rows`),
`--serving-rounds` rounds in ABC CBA order (a drift of the shared machine weighs on all alike),
`--serving-seconds` per variant in all after a 1 s warm-up per run. Figures: the mean of the
runs' p50 and p95, requests/s over all runs, and `shadow_p50_ratio_c8` (goal <= 1.3) and
`canary_p50_ratio_c8` (goal <= 1.1), each over the champion alone. Checked on the way: no
errors, and each experiment's /model shows it running with both variants scoring.

Sections are selected with `--only NAME` (repeatable); each returns its JSON figures and is
importable (`statistics_figures`, `serving_figures`). The last line of stdout is one JSON
object.

    .venv/bin/python benchmarks/experiments.py [--only statistics] [--experiments 400]
    .venv/bin/python benchmarks/experiments.py --only serving [--serving-seconds 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from readmit.experiments import sequential, simulation
from readmit.experiments.sequential import Mode, SequentialPolicy
from readmit.experiments.simulation import ModelSpec, SimulationSummary

METRICS: tuple[sequential.Metric, ...] = ("log_loss", "brier")
SHARED_NOISE = 0.8
MATURATION_DAYS = 30


def _run(
    spec: ModelSpec, mode: Mode, experiments: int, seed: int, **policy: Any
) -> SimulationSummary:
    """One scenario, with a progress line."""
    start = time.perf_counter()
    summary = simulation.run_experiments(
        spec, experiments, mode=mode, policy=SequentialPolicy(**policy), seed=seed
    )
    counts = summary.to_dict()["counts"]
    print(f"  {mode:6} {spec.name:14} {policy}: better {counts['challenger_better']:4}, worse "
          f"{counts['challenger_worse']:4}, inconclusive {counts['inconclusive']:4}  "
          f"({time.perf_counter() - start:.1f} s)", flush=True)  # fmt: skip
    return summary


def _metric_figures(metric: sequential.Metric, experiments: int, seed: int) -> dict[str, Any]:
    """The headline figures of one metric, shadow and canary (see the module doc)."""
    shadow = {
        spec.name: _run(spec, "shadow", experiments, seed + i, metric=metric)
        for i, spec in enumerate(
            (simulation.SAME, simulation.BETTER, simulation.WORSE, simulation.MISCALIBRATED)
        )
    }
    canary = {
        spec.name: _run(spec, "canary", experiments, seed + 10 + i, metric=metric)
        for i, spec in enumerate(
            (simulation.SAME, simulation.BETTER, simulation.WORSE, simulation.BROKEN)
        )
    }
    aa, better = shadow["same"], shadow["better"]
    median_better = better.median_n("challenger_better")
    return {
        "aa_false_positive_rate": 1.0 - aa.rate("inconclusive"),
        "aa_decided_better": int(np.sum(aa.outcomes == "challenger_better")),
        "aa_decided_worse": int(np.sum(aa.outcomes == "challenger_worse")),
        "power_auc_plus_0_01": better.rate("challenger_better"),
        "median_outcomes_to_decision": median_better,
        "median_days_to_decision": None
        if median_better is None
        else round(median_better / simulation.ENCOUNTERS_PER_DAY + MATURATION_DAYS),
        "harm_stop_rate": shadow["worse"].rate("challenger_worse"),
        "median_outcomes_to_harm_stop": shadow["worse"].median_n("challenger_worse"),
        "harm_stop_rate_miscalibrated": shadow["miscalibrated"].rate("challenger_worse"),
        "canary_aa_false_positive_rate": 1.0 - canary["same"].rate("inconclusive"),
        "canary_power_auc_plus_0_01": canary["better"].rate("challenger_better"),
        "canary_harm_stop_rate": canary["worse"].rate("challenger_worse"),
        "canary_harm_stop_rate_broken": canary["broken"].rate("challenger_worse"),
        "canary_median_outcomes_to_harm_stop_broken": canary["broken"].median_n("challenger_worse"),
        "challenger_auc_diff_realised": better.to_dict()["realised_auc_diff"],
        "worse_auc_diff_realised": shadow["worse"].to_dict()["realised_auc_diff"],
    }


def _prediction_correlation(spec: ModelSpec, seed: int) -> float:
    """Pearson correlation of the champion's and the challenger's probabilities."""
    data = simulation.simulate_encounters(spec, 1, 200_000, np.random.default_rng(seed))
    return float(np.corrcoef(data.champion[0], data.challenger[0])[0, 1])


def _sensitivity(experiments: int, seed: int) -> dict[str, Any]:
    """Power at longer horizons, and with correlated model errors (default metric)."""
    year = sequential.ENCOUNTERS_PER_YEAR
    figures: dict[str, Any] = {}
    for years in (2, 3):
        summary = _run(
            simulation.BETTER, "shadow", experiments, seed + 20 + years, max_n=years * year
        )
        figures[f"power_auc_plus_0_01_{years}y"] = summary.rate("challenger_better")
    same, better = (
        dataclasses.replace(spec, shared_noise=SHARED_NOISE)
        for spec in (simulation.SAME, simulation.BETTER)
    )
    aa = _run(same, "shadow", experiments, seed + 30)
    figures["aa_false_positive_rate_correlated"] = 1.0 - aa.rate("inconclusive")
    power = _run(better, "shadow", experiments, seed + 31)
    figures["power_auc_plus_0_01_correlated"] = power.rate("challenger_better")
    figures["median_outcomes_to_decision_correlated"] = power.median_n("challenger_better")
    figures["prediction_correlation_independent"] = _prediction_correlation(simulation.BETTER, seed)
    figures["prediction_correlation_correlated"] = _prediction_correlation(better, seed)
    return figures


def statistics_figures(experiments: int = 400, seed: int = 0) -> dict[str, Any]:
    """Every figure of the `statistics` section (see the module doc), rounded for JSON."""
    start = time.perf_counter()
    auc = {
        spec.name: simulation.population_auc(spec)
        for spec in (simulation.CHAMPION, simulation.BETTER, simulation.WORSE)
    }
    print(f"population ROC AUC (no label noise): {auc}", flush=True)
    figures: dict[str, Any] = {
        "metric": sequential.DEFAULT_METRIC,
        "alpha": sequential.DEFAULT_ALPHA,
        "max_n": sequential.DEFAULT_MAX_N,
        "experiments_per_scenario": experiments,
        "champion_auc_true": auc["champion"],
        "challenger_auc_diff_true": auc["better"] - auc["champion"],
        "worse_auc_diff_true": auc["worse"] - auc["champion"],
    }
    for metric in METRICS:
        print(f"metric {metric}:", flush=True)
        prefix = "" if metric == sequential.DEFAULT_METRIC else f"{metric}_"
        for key, value in _metric_figures(metric, experiments, seed).items():
            figures[prefix + key] = value
    print(f"sensitivity ({sequential.DEFAULT_METRIC}):", flush=True)
    figures |= _sensitivity(experiments, seed)
    figures["statistics_s"] = time.perf_counter() - start
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


# --------------------------------------------------------------------------- serving

SERVING_VARIANTS = ("champion", "shadow", "canary")
SERVING_CONCURRENCY = 8
GOAL_SHADOW_RATIO = 1.3
GOAL_CANARY_RATIO = 1.1


def _serving_models(settings: Any) -> tuple[str, str]:
    """Champion and challenger of production size, registered in `settings`' store."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from readmit import data, features, pseudonyms
    from readmit.model import registry
    from readmit.schema import INPUT_COLUMNS

    key = settings.pseudonym_key_bytes
    frame = data.exclude_died_or_hospice(data.read_encounters(settings.data_uri).frame)
    train = pseudonyms.add_keys(data.in_time_order(frame).iloc[:30_000], key)
    label = features.make_label(train, "<30")
    tags = []
    for name, booster in (
        ("champion", {"n_estimators": 300, "max_depth": 6, "random_state": 0}),
        ("challenger", {"n_estimators": 400, "max_depth": 5, "subsample": 0.8, "random_state": 1}),
    ):
        pipe = Pipeline([
            ("history", features.PatientHistory(pseudonyms.fingerprint(key))),
            ("features", features.EncounterFeatures()),
            ("encode", features.FeatureEncoder()),
            ("model", XGBClassifier(learning_rate=0.05, n_jobs=2, **booster)),
        ])  # fmt: skip
        pipe.fit(train, label)
        metadata = {"threshold": 0.12, "label_definition": "<30", "metrics": {},
                    "trained_at": f"benchmarks/experiments.py {name}",
                    "feature_names": list(INPUT_COLUMNS)}  # fmt: skip
        tags.append(registry.save_model(pipe, metadata, stage="candidate", settings=settings))
    return tags[0], tags[1]


def _experiment_running(url: str, mode: str) -> dict[str, Any]:
    """/model's experiment of a server, which must be running in `mode`."""
    import httpx

    info = httpx.get(f"{url}/model", timeout=10).json()["experiment"]
    assert info and info["running"] and info["mode"] == mode, info
    return dict(info)


def serving_figures(seconds: float = 20.0, rounds: int = 2) -> dict[str, Any]:
    """c8 latency of /predict: the champion alone, shadow and a 10% canary (module doc)."""
    import serving as serving_bench  # benchmarks/serving.py, beside this file

    from readmit.experiments.spec import ExperimentSpec
    from readmit.ops import deploy
    from readmit.settings import get_settings

    start = time.perf_counter()
    home = tempfile.mkdtemp(prefix="readmit-bench-store-")
    os.environ["READMIT_BENTOML_HOME"] = os.environ["BENTOML_HOME"] = home
    get_settings.cache_clear()
    settings = get_settings()
    champion, challenger = _serving_models(settings)
    specs = {
        "shadow": ExperimentSpec("bench-shadow", "shadow", champion, challenger),
        "canary": ExperimentSpec("bench-canary", "canary", champion, challenger, 0.1),
    }
    bentos = {"champion": deploy.build_bento(champion, settings)}
    for name, spec in specs.items():
        bentos[name] = deploy.build_bento(champion, settings, experiment=spec)
    print(f"models and bentos ready ({time.perf_counter() - start:.0f} s)", flush=True)
    frame, bodies = serving_bench.encounter_rows(2000)
    for body, encounter_id in zip(bodies, frame["encounter_id"], strict=True):
        body["encounter_id"] = int(encounter_id)  # a feed row as sent: both identifiers
    run_dir = Path(tempfile.mkdtemp(prefix="readmit-bench-experiments-"))
    script = serving_bench.wrk_script(bodies, run_dir)
    servers: dict[str, tuple[int, str]] = {}
    runs: list[dict[str, Any]] = []
    try:
        for name, bento in bentos.items():
            env = {**serving_bench.bento_env(run_dir, 1, True),
                   "READMIT_PREDICTION_LOG_URI": str(run_dir / f"plogs-{name}")}  # fmt: skip
            servers[name] = serving_bench.serve_bento(bento, run_dir / name, env)
        for name, spec in specs.items():
            _experiment_running(servers[name][1], spec.mode)
        order = list(SERVING_VARIANTS)
        for round_no in range(1, rounds + 1):
            for name in order if round_no % 2 else order[::-1]:
                url = f"{servers[name][1]}/predict"
                result = serving_bench.load(url, script, SERVING_CONCURRENCY, seconds / rounds)
                runs.append({"round": round_no, "variant": name, **result})
                print(
                    f"round {round_no} {name:<8} c8: {result['rps']:>8,.1f} req/s  p50 "
                    f"{result['p50_ms']:.2f} ms  p95 {result['p95_ms']:.2f} ms  "
                    f"{result['requests']:,} requests, {result['errors']} errors",
                    flush=True,
                )
        served = {name: _experiment_running(servers[name][1], spec.mode)["variants"]
                  for name, spec in specs.items()}  # fmt: skip
    finally:
        for pid, _ in servers.values():
            deploy.stop_server(pid)
    return _serving_summary(runs, served, seconds, time.perf_counter() - start)


def _serving_summary(
    runs: list[dict[str, Any]], served: dict[str, Any], seconds: float, elapsed: float
) -> dict[str, Any]:
    """Per variant: mean p50/p95 of its runs, req/s over them; the ratios to the champion."""
    c8: dict[str, dict[str, Any]] = {}
    for name in SERVING_VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        c8[name] = {
            "p50_ms": round(float(np.mean([r["p50_ms"] for r in mine])), 2),
            "p95_ms": round(float(np.mean([r["p95_ms"] for r in mine])), 2),
            "rps": round(float(np.mean([r["rps"] for r in mine])), 1),
            "requests": sum(r["requests"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
        }
    base = c8["champion"]["p50_ms"]
    figures: dict[str, Any] = {
        "shadow_p50_ratio_c8": round(c8["shadow"]["p50_ms"] / base, 3),
        "canary_p50_ratio_c8": round(c8["canary"]["p50_ms"] / base, 3),
    }
    for name, values in c8.items():
        figures[f"{name}_p50_ms_c8"] = values["p50_ms"]
        figures[f"{name}_p95_ms_c8"] = values["p95_ms"]
        figures[f"{name}_rps_c8"] = values["rps"]
    print(
        f"\nshadow p50 ratio {figures['shadow_p50_ratio_c8']} (goal <= {GOAL_SHADOW_RATIO}), "
        f"canary p50 ratio {figures['canary_p50_ratio_c8']} (goal <= {GOAL_CANARY_RATIO})"
    )
    canary = served["canary"]
    answered = canary["challenger"]["requests"] + canary["champion"]["requests"]
    return {
        **figures,
        "serving_c8": c8,
        "serving_errors": sum(v["errors"] for v in c8.values()),
        "serving_runs": runs,
        "serving_seconds_per_variant": seconds,
        "serving_workers": 1,
        "shadow_scored_by_challenger": served["shadow"]["challenger"]["requests"],
        "canary_challenger_share": round(canary["challenger"]["requests"] / max(1, answered), 3),
        "variant_scoring_p50_ms": {
            f"{name}_{variant}": info["latency_p50_ms"]
            for name, variants in served.items()
            for variant, info in variants.items()
        },
        "serving_s": round(elapsed, 1),
    }


def _real_pair(settings: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real champion and a real retrained challenger on real later encounters: the champion
    fitted on the oldest 30,000 encounters, the challenger on 45,000 (the champion's data plus
    what came after, as a retraining does), both with the project's feature pipeline and
    XGBoost; their probabilities and the outcomes of 10,000 later encounters of other patients."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from readmit import data, features, pseudonyms

    key = settings.pseudonym_key_bytes
    frame = data.in_time_order(
        data.exclude_died_or_hospice(data.read_encounters(settings.data_uri).frame)
    )
    keyed = pseudonyms.add_keys(frame, key)
    later = keyed.iloc[60_000:]
    later = later[~later["patient_nbr"].isin(keyed.iloc[:45_000]["patient_nbr"])].iloc[:10_000]
    scores = []
    for rows in (30_000, 45_000):
        train = keyed.iloc[:rows]
        pipe = Pipeline([
            ("history", features.PatientHistory(pseudonyms.fingerprint(key))),
            ("features", features.EncounterFeatures()),
            ("encode", features.FeatureEncoder()),
            ("model", XGBClassifier(n_estimators=300, max_depth=5, learning_rate=0.05,
                                    subsample=0.8, n_jobs=2, random_state=0)),
        ])  # fmt: skip
        pipe.fit(train, features.make_label(train, "<30"))
        scores.append(pipe.predict_proba(later)[:, 1])
    return scores[0], scores[1], np.asarray(features.make_label(later, "<30"))


def realism_figures(experiments: int = 400, seed: int = 0) -> dict[str, Any]:
    """Which simulated case a real retraining is in: the prediction correlation of a real
    champion and its retrained challenger on real later encounters, the simulation's model
    errors correlated to match it, and the power and A/A rate there (module doc)."""
    from sklearn.metrics import roc_auc_score

    from readmit.settings import get_settings

    champion, challenger, labels = _real_pair(get_settings())
    measured = float(np.corrcoef(champion, challenger)[0, 1])
    grid = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
    simulated = {g: _prediction_correlation(dataclasses.replace(simulation.BETTER, shared_noise=g),
                                            seed) for g in grid}  # fmt: skip
    shared = min(grid, key=lambda g: abs(simulated[g] - measured))
    same, better = (dataclasses.replace(spec, shared_noise=shared)
                    for spec in (simulation.SAME, simulation.BETTER))  # fmt: skip
    aa = _run(same, "shadow", experiments, seed + 40)
    power = _run(better, "shadow", experiments, seed + 41)
    return {
        "real_prediction_correlation": round(measured, 4),
        "real_auc_champion": round(float(roc_auc_score(labels, champion)), 4),
        "real_auc_challenger": round(float(roc_auc_score(labels, challenger)), 4),
        "matched_shared_noise": shared,
        "matched_prediction_correlation": round(simulated[shared], 4),
        "aa_false_positive_rate_matched": round(1.0 - aa.rate("inconclusive"), 4),
        "power_auc_plus_0_01_matched": power.rate("challenger_better"),
        "median_outcomes_to_decision_matched": power.median_n("challenger_better"),
    }


def signing_figures(repeats: int = 20) -> dict[str, Any]:
    """`verify_ms`: what verifying a model's signature adds to every load (median of `repeats`),
    against a whole `load_model`, for a production-size model in a store of its own."""
    from readmit.model import registry
    from readmit.settings import get_settings

    home = tempfile.mkdtemp(prefix="readmit-bench-signing-")
    os.environ["READMIT_BENTOML_HOME"] = os.environ["BENTOML_HOME"] = home
    get_settings.cache_clear()
    settings = get_settings()
    tag, _ = _serving_models(settings)
    verify = registry.verify_ms(tag, repeats, settings)
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        registry.load_model(tag, settings)
        loads.append((time.perf_counter() - start) * 1000)
    return {"verify_ms": round(verify, 2), "load_ms": round(float(np.median(loads)), 1),
            "verify_repeats": repeats}  # fmt: skip


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "statistics": lambda args: statistics_figures(args.experiments, args.seed),
    "serving": lambda args: serving_figures(args.serving_seconds, args.serving_rounds),
    "signing": lambda args: signing_figures(),
    "realism": lambda args: realism_figures(args.experiments, args.seed),
}
"""One function per section (`--only NAME` runs some); each returns its JSON figures."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=list(SECTIONS), metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )  # fmt: skip
    parser.add_argument("--experiments", type=int, default=400, help="per scenario (>= 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serving-seconds", type=float, default=20.0, help="c8 load per variant")
    parser.add_argument("--serving-rounds", type=int, default=2, help="ABC CBA rounds")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    for name, section in SECTIONS.items():
        if not args.only or name in args.only:
            figures |= section(args)
    print(json.dumps({**figures, "bench_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
