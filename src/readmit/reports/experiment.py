"""The report of a live experiment: its decision, the confidence sequence day by day, and the
ROC AUC comparison, as one self-contained HTML page (`page.page`) and an inline SVG chart that
also goes into the Prefect artifact."""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

import pandas as pd

from readmit.reports.page import page

OUTCOME_COLOURS = {
    "challenger_better": "#16a34a",
    "challenger_worse": "#dc2626",
    "inconclusive": "#6b7280",
    "continue": "#2563eb",
}


def sequence_svg(looks: pd.DataFrame, width: int = 640, height: int = 260) -> str:
    """The anytime-valid interval of the loss difference after each day, around zero: above
    zero the challenger is better. Empty looks give an empty chart with a note."""
    pad = 44
    finite = looks.replace([math.inf, -math.inf], math.nan).dropna(subset=["cs_lower", "cs_upper"])
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif"><rect width="100%" '
        f'height="100%" fill="white"/>'
    )
    if finite.empty:
        return head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" ' \
            'font-size="12">no matured outcomes yet</text></svg>'  # fmt: skip
    span = max(float(finite[["cs_lower", "cs_upper"]].abs().max().max()), 1e-6) * 1.1
    n_max = max(float(finite["n"].max()), 1.0)

    def xy(n: float, v: float) -> tuple[float, float]:
        return pad + n / n_max * (width - 2 * pad), height / 2 - v / span * (height / 2 - pad)

    band = [xy(n, u) for n, u in zip(finite["n"], finite["cs_upper"], strict=True)]
    band += [xy(n, lo) for n, lo in zip(finite["n"][::-1], finite["cs_lower"][::-1], strict=True)]
    mid = [xy(n, e) for n, e in zip(finite["n"], finite["estimate"], strict=True)]
    x0, y0 = xy(0, 0)
    x1, _ = xy(n_max, 0)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in band)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in mid)
    return head + (
        f'<text x="{width / 2}" y="18" font-size="13" text-anchor="middle">Loss difference '
        f"(champion - challenger), anytime-valid interval</text>"
        f'<polygon points="{points}" fill="#bfdbfe" stroke="none"/>'
        f'<polyline points="{line}" fill="none" stroke="#1d4ed8" stroke-width="2"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black" stroke-dasharray="4"/>'
        f'<text x="{pad - 4}" y="{xy(0, span / 1.1)[1] + 4:.1f}" font-size="10" '
        f'text-anchor="end">{span / 1.1:+.4f}</text>'
        f'<text x="{pad - 4}" y="{y0 + 3}" font-size="10" text-anchor="end">0</text>'
        f'<text x="{width - pad}" y="{height - 10}" font-size="11" text-anchor="end">'
        f"{int(n_max)} encounters with outcomes</text></svg>"
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5f}" if math.isfinite(value) else "-"
    return escape("-" if value is None else str(value))


def result_rows(spec: Mapping[str, Any], result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The decision as table rows (the Prefect table artifact and the report's table)."""
    ci = result.get("auc_diff_ci") or [None, None]
    return [
        {"figure": "decision", "value": result.get("outcome")},
        {"figure": "mode", "value": spec.get("mode")},
        {"figure": "champion", "value": spec.get("champion")},
        {"figure": "challenger", "value": spec.get("challenger")},
        {"figure": "encounters with outcomes", "value": result.get("n")},
        {"figure": f"{result.get('metric')} difference", "value": result.get("estimate")},
        {"figure": "anytime-valid interval, lower", "value": result.get("cs_lower")},
        {"figure": "anytime-valid interval, upper", "value": result.get("cs_upper")},
        {"figure": "always-valid p-value", "value": result.get("p_value")},
        {"figure": "ROC AUC champion", "value": result.get("auc_champion")},
        {"figure": "ROC AUC challenger", "value": result.get("auc_challenger")},
        {"figure": "ROC AUC difference (fixed-n)", "value": result.get("auc_diff")},
        {
            "figure": "its 95% interval",
            "value": None if ci[0] is None else f"{ci[0]:.4f} to {ci[1]:.4f}",
        },
    ]


def render_experiment_report(
    spec: Mapping[str, Any], result: Mapping[str, Any], looks: pd.DataFrame, svg: str
) -> str:
    """The self-contained HTML report of one look at an experiment."""
    outcome = str(result.get("outcome"))
    colour = OUTCOME_COLOURS.get(outcome, "#6b7280")
    rows = "".join(
        f"<tr><th>{escape(r['figure'])}</th><td>{_cell(r['value'])}</td></tr>"
        for r in result_rows(spec, result)
    )
    said = {k: escape(str(spec.get(k))) for k in ("id", "mode", "champion", "challenger",
                                                    "started_at", "started_by")}  # fmt: skip
    body = (
        f"<h1>Experiment {said['id']}</h1>"
        f"<p class='meta'>{said['mode']}: {said['challenger']} beside {said['champion']}, "
        f"started {said['started_at']} by {said['started_by']}</p>"
        f"<p><span class='badge' style='background:{colour}'>{escape(outcome)}</span></p>"
        f"<h2>Decision</h2><table>{rows}</table><h2>Day by day</h2>{svg}"
        f"<p class='muted'>{len(looks)} looks. The interval is valid at every look at once "
        "(a confidence sequence): looking every day does not inflate the error rate. The ROC AUC "
        "interval is fixed-n: read it, do not decide on it.</p>"
    )
    return page(f"Experiment {spec.get('id')}", body)
