"""A self-contained HTML drift report: inline CSS and inline SVG, no script, no external asset.

whylogs' own HTML report loads its assets from CDNs and renders blank offline; this page renders
anywhere (artifact store, Prefect artifact link, e-mail attachment).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from readmit.monitoring.drift import (
    STATISTICS,
    DriftReport,
    FeatureDrift,
    PerformanceResult,
    Severity,
)
from readmit.reports.page import page

_COLOURS = {
    Severity.NONE: "#15803d",
    Severity.MINOR: "#a16207",
    Severity.MODERATE: "#c2410c",
    Severity.MAJOR: "#b91c1c",
}
_CSS = """
th,td{text-align:right}th{position:sticky;top:0}td.l,th.l{text-align:left}
tr.hit{background:#fff7ed}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
.note{color:#4b5563;font-size:12px;max-width:900px}
"""
_REF, _CUR = "#9ca3af", "#2563eb"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _badge(severity: Severity) -> str:
    return f'<span class="badge" style="background:{_COLOURS[severity]}">{severity.value}</span>'


def bars_svg(bins: Sequence[tuple[str, float, float]], width: int = 260, height: int = 56) -> str:
    """Paired bars per bin (grey: reference share, blue: batch share), tooltips on each bar."""
    if not bins:
        return ""
    top = max(max(r, c) for _, r, c in bins) or 1.0
    slot = width / len(bins)
    bar = max(slot / 2 - 1, 1)
    shapes = []
    for i, (label, ref, cur) in enumerate(bins):
        for j, (share, colour, side) in enumerate(((ref, _REF, "reference"), (cur, _CUR, "batch"))):
            h = share / top * (height - 4)
            x = i * slot + j * bar
            shapes.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(str(label))}: {side} {share:.1%}</title></rect>'
            )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="distribution comparison">{"".join(shapes)}</svg>'
    )


def _feature_rows(features: Sequence[FeatureDrift]) -> str:
    rows = []
    for f in features:
        s = f.scores
        hit = ' class="hit"' if f.level is not Severity.NONE else ""
        rows.append(
            f"<tr{hit}><td class='l'>{escape(f.feature)}</td><td class='l'>{f.kind}</td>"
            f"<td>{_badge(f.level)}</td><td>{f.ratio:.2f}</td><td class='l'>{f.driver}</td>"
            + "".join(f"<td>{_fmt(s.get(st.name), st.digits)}</td>" for st in STATISTICS)
            + f"<td>{f.missing_reference:.1%} → {f.missing_batch:.1%}</td><td>{f.n_batch:,}</td>"
            f"<td class='l'>{bars_svg(f.bins)}</td></tr>"
        )
    return "".join(rows)


def _feature_table(features: Sequence[FeatureDrift]) -> str:
    head = (
        "<tr><th class='l'>feature</th><th class='l'>kind</th><th>level</th><th>ratio</th>"
        "<th class='l'>driver</th>"
        + "".join(f"<th>{escape(st.column)}</th>" for st in STATISTICS)
        + "<th>missing ref → batch</th><th>rows</th>"
        "<th class='l'>distribution</th></tr>"
    )
    return f"<table>{head}{_feature_rows(features)}</table>"


def _performance_table(perf: PerformanceResult) -> str:
    b = perf.baseline
    status = "DROP: " + "; ".join(perf.reasons) if perf.reasons else "within tolerance"
    if not perf.evaluable:
        status = "too few positives or negatives to judge"
    rows = [
        ("ROC AUC", perf.roc_auc, b.roc_auc),
        ("ECE", perf.ece, b.ece),
        ("observed rate", perf.observed_rate, b.observed_rate),
        ("mean predicted", perf.mean_predicted, b.mean_predicted),
    ]
    body = "".join(
        f"<tr><td class='l'>{name}</td><td>{_fmt(cur)}</td><td>{_fmt(ref)}</td></tr>"
        for name, cur, ref in rows
    )
    return (
        f"<p class='meta'>{perf.n:,} labelled encounters, {perf.positives:,} positive. "
        f"<b>{escape(status)}</b></p><table style='width:auto'><tr><th class='l'>metric</th>"
        f"<th>batch</th><th>training holdout</th></tr>{body}</table>"
    )


def render_drift_report_html(report: DriftReport, title: str = "Drift report") -> str:
    """The whole report as one HTML string that renders offline (no scripts, no links)."""
    responsible = ", ".join(escape(f) for f in report.responsible) or "none"
    calibration = report.calibration
    method = (
        f"Thresholds calibrated on {calibration.get('n_batches', '?')} no-drift batches of "
        f"{calibration.get('batch_size', '?')} rows (largest clean value × "
        f"{calibration.get('margin', '?')}), scaled up for smaller batches. "
        if calibration
        else ""
    )
    parts = [
        f"<h1>{escape(title)} {_badge(report.severity)}</h1>",
        f"<p class='meta'>batch <b>{escape(report.batch_id)}</b> · {report.n_rows:,} rows · "
        f"{escape(report.created_at)} · alert: <b>{'yes' if report.alert else 'no'}</b> · "
        f"features responsible: {responsible}</p>",
        "<p class='legend meta'>bars:<span style='background:#9ca3af'></span>reference"
        "<span style='background:#2563eb'></span>batch</p>",
    ]
    if report.performance is not None:
        parts += ["<h2>Performance (labels arrived)</h2>", _performance_table(report.performance)]
    if report.prediction is not None:
        parts += ["<h2>Prediction drift</h2>", _feature_table([report.prediction])]
    if report.features:
        parts += ["<h2>Feature drift</h2>", _feature_table(report.features)]
    parts.append(
        f"<p class='note'>Severity comes from effect sizes, not p-values. {method}"
        "A feature's ratio is its largest score / threshold among the deciding statistics "
        "(PSI, missing-share change, unseen share; Wasserstein for numbers). Levels: ratio > "
        f"{report.policy.minor_ratio:g} minor, > {report.policy.moderate_ratio:g} moderate, > "
        f"{report.policy.major_ratio:g} major; {report.policy.moderate_features} features over "
        f"threshold make a batch at least moderate, {report.policy.major_features} major.</p>"
    )
    return page(title, "".join(parts), _CSS)
