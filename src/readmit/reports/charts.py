"""Tiny dependency-free SVG charts for reports and Prefect artifacts (render offline)."""

from __future__ import annotations

import base64
from collections.abc import Sequence


def calibration_svg(
    predicted: Sequence[float],
    observed: Sequence[float],
    counts: Sequence[int],
    *,
    title: str = "Calibration (holdout)",
    size: int = 320,
) -> str:
    """Reliability diagram: mean predicted vs observed rate per bin, with the diagonal.

    Axes span [0, max] of the data (readmission risks are small), so the curve is readable.
    """
    pad = 40
    top = max([0.05, *predicted, *observed]) * 1.1
    plot = size - 2 * pad

    def xy(p: float, o: float) -> tuple[float, float]:
        return pad + p / top * plot, size - pad - o / top * plot

    points = " ".join(
        f"{x:.1f},{y:.1f}" for x, y in (xy(p, o) for p, o in zip(predicted, observed, strict=True))
    )
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2 + min(6, n**0.5 / 15):.1f}" fill="#2563eb">'
        f"<title>predicted {p:.3f}, observed {o:.3f}, n={n}</title></circle>"
        for (p, o, n) in zip(predicted, observed, counts, strict=True)
        for (x, y) in [xy(p, o)]
    )
    x0, y0 = xy(0, 0)
    x1, y1 = xy(top, top)
    ticks = "".join(
        f'<text x="{xy(t, 0)[0]:.1f}" y="{size - pad + 14}" font-size="10" text-anchor="middle">'
        f"{t:.2f}</text>"
        f'<text x="{pad - 6}" y="{xy(0, t)[1] + 3:.1f}" font-size="10" text-anchor="end">'
        f"{t:.2f}</text>"
        for t in (top * i / 4 for i in range(5))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{size / 2}" y="18" font-size="13" text-anchor="middle">{title}</text>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#9ca3af" stroke-dasharray="4"/>'
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{size - pad}" stroke="black"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{size - pad}" stroke="black"/>'
        f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="2"/>{dots}{ticks}'
        f'<text x="{size / 2}" y="{size - 6}" font-size="11" text-anchor="middle">'
        f"mean predicted probability</text>"
        f'<text x="12" y="{size / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {size / 2})">observed readmission rate</text></svg>'
    )


def svg_data_uri(svg: str) -> str:
    """An SVG as a data: URI, to embed in Markdown or HTML without any external file."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def calibration_markdown(
    svg: str, calibration: dict[str, list], metrics: dict[str, float], svg_uri: str
) -> str:
    """Markdown for a Prefect artifact: the chart inline plus the same bins as a table.

    The table keeps the artifact readable where a UI strips `data:` images.
    """
    rows = "\n".join(
        f"| {p:.3f} | {o:.3f} | {n} | {'█' * max(1, round(o * 100))} |"
        for p, o, n in zip(
            calibration["mean_predicted"],
            calibration["observed_rate"],
            calibration["count"],
            strict=True,
        )
    )
    return (
        f"## Calibration on the patient-disjoint holdout\n\n![calibration]({svg_data_uri(svg)})\n\n"
        f"Brier {metrics['brier']:.4f}, expected calibration error {metrics['ece']:.4f}. "
        f"SVG: `{svg_uri}/calibration.svg`\n\n"
        "| mean predicted | observed rate | encounters | observed (1 block = 1%) |\n"
        f"| ---: | ---: | ---: | :--- |\n{rows}\n"
    )
