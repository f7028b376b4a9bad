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

Sections are selected with `--only NAME` (repeatable); each returns its JSON figures and is
importable (`statistics_figures`). The last line of stdout is one JSON object.

    .venv/bin/python benchmarks/experiments.py [--only statistics] [--experiments 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
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


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "statistics": lambda args: statistics_figures(args.experiments, args.seed),
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
    args = parser.parse_args(argv)
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    for name, section in SECTIONS.items():
        if not args.only or name in args.only:
            figures |= section(args)
    print(json.dumps({**figures, "bench_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
