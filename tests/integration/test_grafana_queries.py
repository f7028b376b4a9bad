"""The Grafana dashboard (deployments/grafana/readmit-dashboard.json), checked without Grafana.

Grafana cannot be installed here, so its queries are checked where they run: against a live
Prometheus (Debian's, started by deployments/local/services.py with the Pushgateway) that scrapes
a real bento and holds monitoring results pushed by `readmit.monitoring.push_metrics`. Every
panel query must parse, execute and return data; a few panels are checked for the right values.
The structural tests at the top need no server.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
import stack_helpers as sh

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = PROJECT_ROOT / "deployments" / "grafana" / "readmit-dashboard.json"
RATE_INTERVAL = "1m"  # what Grafana puts for $__rate_interval (>= 4 scrape intervals)
RANGE = "10m"  # $__range: the dashboard's time range
METRIC_TOKEN = re.compile(r"\b((?:bentoml|readmit)_[a-z0-9_]+)\b")
REQUIRED_METRICS = {
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds_bucket",
    "readmit_predictions_total",
    "readmit_prediction_probability_bucket",
    "readmit_model_info",
    "readmit_drift_severity",
    "readmit_drift_feature_ratio",
    "readmit_realised_roc_auc",
    "readmit_monitoring_last_success_timestamp_seconds",
}
REQUIRED_PANELS = (  # words of the panel titles the issue asks for
    "Request rate", "p95", "4xx", "risk label", "histogram", "Served model", "Drift severity",
    "drift ratio", "ROC AUC", "last successful monitoring",
)  # fmt: skip
PUSHED = {  # sample monitoring results: feature -> drift ratio, and the realised AUC
    "ratios": {"age": 5.2, "admission_source_id": 2.4, "num_medications": 0.6},
    "roc_auc": 0.655,
}


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(p["title"], p["type"], t["refId"], t["expr"], bool(t.get("instant")))
        for p in all_panels(dashboard["panels"])
        for t in p.get("targets", [])
    ]


def grafana_regex(text: str) -> re.Pattern[str] | None:
    """A variable's `/pattern/flags` regex as Python's (None when empty)."""
    if not text:
        return None
    match = re.fullmatch(r"/(.*)/([gimsuy]*)", text, flags=re.S)
    assert match, f"not a Grafana regex: {text!r}"
    flags = re.I if "i" in match.group(2) else 0
    return re.compile(match.group(1), flags)


def grafana_escape(value: str) -> str:
    """A multi-value variable's value as Grafana's Prometheus data source writes it into `=~"..."`:
    regex metacharacters escaped with a backslash that is itself escaped for the PromQL string."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def expand(expr: str, variables: dict[str, str]) -> str:
    """The query Grafana sends: built-in intervals and template variables substituted."""
    out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", RANGE)
    out = out.replace("$__interval", "15s")
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert "$" not in out, f"unresolved variable in {out}"
    return out


# ---------------------------------------------------------------- structure (no server)


def test_dashboard_is_well_formed_grafana_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "readmit-overview" and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= set(variables), f"{panel['title']}: unknown variables {used}"


def test_dashboard_covers_service_and_monitoring_metrics() -> None:
    queries = panel_queries(load_dashboard())
    used = {token for q in queries for token in METRIC_TOKEN.findall(q.expr)}
    assert used >= REQUIRED_METRICS, f"missing panels for {REQUIRED_METRICS - used}"
    titles = {q.panel for q in queries}
    for needed in REQUIRED_PANELS:
        assert any(needed in title for title in titles), needed


def test_dashboard_metric_names_exist_in_the_code_that_exports_them() -> None:
    """A renamed metric in readmit.serving, readmit.monitoring or BentoML breaks this test, not a
    panel."""
    sources = "".join(
        (PROJECT_ROOT / "src" / "readmit" / room / "__init__.py").read_text()
        for room in ("serving", "monitoring")
    )
    import bentoml._internal.server.http.instruments as instruments

    bentoml_names = set(re.findall(r'name="(\w+)"', Path(instruments.__file__).read_text()))
    used = {t for q in panel_queries(load_dashboard()) for t in METRIC_TOKEN.findall(q.expr)}
    for metric in used:
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        names = {base, base.removesuffix("_total")}  # prometheus_client adds _total to counters
        if metric.startswith("bentoml_service_"):
            assert {n.removeprefix("bentoml_service_") for n in names} & bentoml_names, metric
        else:
            assert any(f'"{n}"' in sources for n in names), f"{metric}: not in serving/monitoring"


# ---------------------------------------------------------------- live Prometheus


@dataclass(frozen=True)
class MetricsStack:
    prometheus: str
    pushgateway: str


@pytest.fixture(scope="session")
def bento(full_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    with sh.shared_bento(full_frame, tmp_path_factory.mktemp("bento")) as served:
        yield served


@pytest.fixture(scope="module")
def metrics_stack(
    local_services: ModuleType, bento: sh.ServedBento, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsStack]:
    """Pushgateway + Prometheus (1 s scrapes and rule evaluation) scraping the test bento."""
    cfg = local_services.Config(
        run_dir=tmp_path_factory.mktemp("metrics-run"), free_ports=True, tie_to_parent=True,
        scrape_interval="1s", bento_target=f"127.0.0.1:{bento.port}",
    )  # fmt: skip
    try:
        local_services.up(cfg, only=["pushgateway", "prometheus"], run_deploy=False)
        services = local_services.load_state(cfg)["services"]
        yield MetricsStack(
            services["prometheus"]["urls"]["ui"], services["pushgateway"]["urls"]["ui"]
        )
    finally:
        local_services.stop(cfg)


def push_sample_monitoring_run(pushgateway: str, model_tag: str) -> None:
    """What the monitoring flow pushes after a run that found major drift, via its own code."""
    from readmit import monitoring
    from readmit.monitoring import drift

    policy = drift.SeverityPolicy()
    common = {"kind": "numeric", "n_reference": 5000, "n_batch": 2000, "driver": "psi",
              "thresholds": {"psi": 0.1}, "missing_reference": 0.0, "missing_batch": 0.0,
              "bins": []}  # fmt: skip
    features = [
        drift.FeatureDrift(
            feature=name,
            ratio=ratio,
            scores={"psi": 0.1 * ratio},
            level=policy.level(ratio),
            **common,
        )
        for name, ratio in PUSHED["ratios"].items()
    ]
    baseline = drift.PerformanceBaseline(
        roc_auc=0.67, ece=0.02, observed_rate=0.11, mean_predicted=0.11
    )
    performance = drift.PerformanceResult(
        n=2000, positives=220, evaluable=True, roc_auc=PUSHED["roc_auc"], ece=0.03,
        observed_rate=0.11, mean_predicted=0.12, baseline=baseline, reasons=[],
    )  # fmt: skip
    report = drift.DriftReport(
        batch_id="batch-0001", n_rows=2000, severity=drift.Severity.MAJOR,
        responsible=["age", "admission_source_id"], features=features, performance=performance,
    )  # fmt: skip
    monitoring.push_metrics(pushgateway, [report], model_tag)


def send_traffic(bento: sh.ServedBento, rows: list[dict[str, Any]]) -> int:
    """Valid single and batch predictions plus rejected requests; returns encounters scored."""
    from readmit.serving import example_encounter

    example = example_encounter()
    for _ in range(3):
        status, body = sh.http_json(f"{bento.url}/predict", example)
        assert status == 200, body
    status, body = sh.http_json(f"{bento.url}/predict_batch", {"encounters": rows})
    assert status == 200, body
    for bad in ({**example, "gender": "?"}, {**example, "age": 42}):
        assert sh.http_json(f"{bento.url}/predict", bad)[0] in (400, 422)
    assert sh.http_json(f"{bento.url}/model")[0] == 200
    return 3 + len(rows)


def served_predictions(bento: sh.ServedBento) -> int:
    """Encounters the bento has scored so far, from its own /metrics (before Prometheus)."""
    import urllib.request

    with urllib.request.urlopen(f"{bento.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("readmit_predictions_total{")]
    return round(sum(float(ln.rsplit(" ", 1)[1]) for ln in lines))


def scalar(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


@pytest.mark.integration
def test_every_panel_query_runs_on_live_prometheus(
    metrics_stack: MetricsStack, bento: sh.ServedBento, full_frame: pd.DataFrame
) -> None:
    prom = metrics_stack.prometheus
    push_sample_monitoring_run(metrics_stack.pushgateway, "readmission:drift-sample")
    sh.wait_for(
        lambda: sh.instant_query(prom, 'up{job="readmit-service"} == 1'), 60, "a bento scrape"
    )
    helpers = sh.service_helpers()
    later = full_frame.iloc[60_000:60_040]
    rows = [helpers.encounter_json(row, with_patient=False) for _, row in later.iterrows()]

    # Two rounds with a scrape between them: rates and increases need two samples. The bento may
    # be shared with other tests (the Swagger check scores one encounter): count from its own
    # /metrics, not from zero.
    scored = served_predictions(bento) + send_traffic(bento, rows)
    total = 'sum(readmit_predictions_total{job="readmit-service"})'
    sh.wait_for(lambda: sh.instant_query(prom, f"{total} == {scored}"), 30, "round 1 scraped")
    scored += send_traffic(bento, rows)
    sh.wait_for(lambda: sh.instant_query(prom, f"{total} == {scored}"), 30, "round 2 scraped")
    sh.wait_for(
        lambda: sh.instant_query(prom, 'ALERTS{alertname="ReadmitDriftMajor"}'), 30,
        "the pushed major drift to fire its alert",
    )  # fmt: skip

    dashboard = load_dashboard()
    variables = {"datasource": "prometheus"}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"]).groups()
        body = sh.prometheus_api(prom, f"label/{label}/values", **{"match[]": metric})
        assert body["status"] == "success", body
        pattern = grafana_regex(var.get("regex", ""))
        values = [v for v in body["data"] if pattern is None or pattern.search(v)]
        assert values, f"variable {var['name']}: no values for {var['definition']}"
        variables[var["name"]] = "(" + "|".join(grafana_escape(v) for v in values) + ")"
    assert "/predict" in variables["endpoint"] and "metrics" not in variables["endpoint"]

    results: dict[str, list[dict[str, Any]]] = {}
    failures = []
    now = time.time()  # Prometheus runs on this machine: same clock
    for query in panel_queries(dashboard):
        expr = expand(query.expr, variables)
        try:
            result = sh.instant_query(prom, expr)
            if not query.instant:  # Grafana runs time series panels as range queries
                body = sh.prometheus_api(
                    prom, "query_range", query=expr, start=str(now - 60), end=str(now), step="2"
                )
                assert body["status"] == "success", f"range: {body.get('error')}\n  in: {expr}"
                assert body["data"]["result"], f"range: no data\n  in: {expr}"
        except AssertionError as exc:
            failures.append(f"{query.panel} [{query.ref_id}]: {exc}")
            continue
        if not result:
            failures.append(f"{query.panel} [{query.ref_id}]: no data\n  in: {expr}")
        results[f"{query.panel}/{query.ref_id}"] = result
    assert not failures, "\n".join(failures)

    # The monitoring panels show what was pushed.
    assert scalar(results["Drift severity (latest run)/A"]) == 3
    ratios = results["Per-feature drift ratio (score / calibrated threshold)/A"]
    assert by_label(ratios, "feature") == pytest.approx(PUSHED["ratios"])
    assert scalar(results["Features over threshold/A"]) == 2
    auc = by_label(results["Realised ROC AUC (labelled batches)/A"], "model")
    assert auc == pytest.approx({"readmission:drift-sample": PUSHED["roc_auc"]})
    assert 0 <= scalar(results["Time since last successful monitoring run/A"]) < 120
    # The service panels show the traffic just sent.
    rates = by_label(results["Request rate by endpoint/A"], "endpoint")
    assert rates["/predict"] > 0 and rates["/predict_batch"] > 0
    p95 = by_label(results["Latency p95 / p99 by endpoint/A"], "endpoint")["/predict"]
    assert math.isfinite(p95) and 0 < p95 < 10
    assert by_label(results["Error share: 4xx and 5xx/A"], "endpoint")["/predict"] > 0
    assert set(by_label(results["Error share: 4xx and 5xx/B"], "endpoint").values()) == {0.0}
    assert scalar(results["Replicas up/A"]) == 1 and scalar(results["Model ready/A"]) == 1
    served = results["Served model/A"]
    assert [r["metric"]["model_tag"] for r in served] == [bento.model_tag]
    assert sum(by_label(results["Predictions by risk label/A"], "risk").values()) > 0
    buckets = by_label(results["Probability histogram (dashboard range)/A"], "le")
    cumulative = [buckets[le] for le in sorted(buckets, key=float)]
    assert cumulative == sorted(cumulative) and cumulative[-1] > 0
    assert 0 < scalar(results["Mean predicted probability (dashboard range)/A"]) < 1
    problems = by_label(results["Rejected requests by problem/A"], "problem")
    assert problems, "rejected requests are counted by problem"
