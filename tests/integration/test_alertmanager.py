"""Alertmanager for real: its config passes amtool and routes as designed, a drift alert that the
monitoring push makes Prometheus fire reaches a webhook, and a down service silences its latency
and error-rate alerts.

The stack (Pushgateway, Alertmanager, Prometheus) is started by deployments/local/services.py, the
code of `make up`, on free loopback ports with a private run directory, and always stopped. The
webhook is a small HTTP server in this process that records what Alertmanager posts.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_DIR = PROJECT_ROOT / "deployments" / "alertmanager"
CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
RENDER = ALERTMANAGER_DIR / "render.sh"
ALERTS = PROJECT_ROOT / "deployments" / "prometheus" / "alerts.yml"
RECEIVER = "readmit-webhook"
PLACEHOLDER = "http://alert-webhook.invalid/readmit"


# ---------------------------------------------------------------- helpers


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("amtool")
    assert found, "amtool is missing: run deployments/local/install.sh (prometheus-alertmanager)"
    return subprocess.run([found, *args], capture_output=True, text=True, check=False, timeout=60)


def check_config(path: Path) -> None:
    done = amtool("check-config", str(path))
    assert done.returncode == 0, f"amtool check-config {path}:\n{done.stdout}{done.stderr}"


def render(tmp_path: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    """render.sh as the containers run it, writing tmp_path/config.yml; `true` as the command."""
    env = {
        "PATH": os.environ["PATH"],
        "ALERTMANAGER_TEMPLATE": str(CONFIG),
        "ALERTMANAGER_CONFIG": str(tmp_path / "config.yml"),
    }
    if url is not None:
        env["READMIT_ALERT_WEBHOOK_URL"] = url
    return subprocess.run(
        ["sh", str(RENDER), "true"], env=env, capture_output=True, text=True, check=False
    )


def alert_rules() -> dict[str, dict[str, Any]]:
    """alertname -> rule of deployments/prometheus/alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def alertnames_in(matchers: list[str]) -> set[str]:
    """The alert names an `alertname="A"` / `alertname=~"A|B"` matcher list selects."""
    names: set[str] = set()
    for matcher in matchers:
        label, _, value = matcher.partition("=")
        if label.strip() == "alertname":
            names |= set(value.lstrip("~").strip('"').split("|"))
    return names


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http_json(url: str, payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


# ---------------------------------------------------------------- the webhook receiver


@dataclass
class Receiver:
    """What Alertmanager posted to the webhook, in order of arrival."""

    url: str
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, **labels: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(notification, alert) pairs whose alert carries all these labels."""
        with self.lock:
            return [
                (note, alert)
                for note in self.notifications
                for alert in note["alerts"]
                if labels.items() <= alert["labels"].items()
            ]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """An HTTP server on a free loopback port that records every JSON body POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    found = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/alerts")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with found.lock:
                found.notifications.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class AlertStack:
    pushgateway: str
    alertmanager: str
    prometheus: str
    config: Any


@pytest.fixture(scope="module")
def alert_stack(
    local_services: ModuleType, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertStack]:
    """Pushgateway, Alertmanager (posting to `receiver`) and Prometheus (1 s evaluation)."""
    from readmit.ops.processes import free_port

    cfg = local_services.Config(
        run_dir=tmp_path_factory.mktemp("alert-run"), free_ports=True, tie_to_parent=True,
        scrape_interval="1s", alert_webhook_url=receiver.url,
        bento_target=f"127.0.0.1:{free_port()}",  # nothing listens: no bento in these tests
    )  # fmt: skip
    try:
        local_services.up(cfg, only=["pushgateway", "alertmanager", "prometheus"], run_deploy=False)
        urls = {n: r["urls"]["ui"] for n, r in local_services.load_state(cfg)["services"].items()}
        yield AlertStack(urls["pushgateway"], urls["alertmanager"], urls["prometheus"], cfg)
    finally:
        local_services.stop(cfg)


# ---------------------------------------------------------------- the config


def test_config_passes_amtool_and_routes_by_severity(tmp_path: Path) -> None:
    check_config(CONFIG)
    config = yaml.safe_load(CONFIG.read_text())
    route = config["route"]
    assert route["group_by"] == ["alertname", "severity"]
    children = {tuple(child["matchers"]): child for child in route["routes"]}
    critical, warning = children[('severity="critical"',)], children[('severity="warning"',)]
    seconds = {"s": 1, "m": 60, "h": 3600}

    def duration(text: str) -> int:
        return int(text[:-1]) * seconds[text[-1]]

    assert duration(critical["group_wait"]) < duration(warning["group_wait"])
    assert duration(critical["repeat_interval"]) < duration(warning["repeat_interval"])

    # Every alert of alerts.yml takes its severity's route to the webhook receiver.
    rules = alert_rules()
    for name, rule in rules.items():
        severity = rule["labels"]["severity"]
        assert (f'severity="{severity}"',) in children, f"{name}: no route for {severity}"
        done = amtool(
            "config", "routes", "test", f"--config.file={CONFIG}", "--tree",
            f"--verify.receivers={RECEIVER}", f"alertname={name}", f"severity={severity}",
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        assert f'{{severity="{severity}"}}  receiver: {RECEIVER}' in done.stdout, done.stdout

    # Inhibition: a down service silences its latency and error-rate alerts, the Pushgateway's
    # absence the monitoring-staleness ones; every name is a rule that exists.
    inhibit = {
        frozenset(alertnames_in(rule["source_matchers"])): rule for rule in config["inhibit_rules"]
    }
    down = inhibit[frozenset({"ReadmitServiceDown"})]
    assert 'severity="critical"' in down["source_matchers"]
    assert alertnames_in(down["target_matchers"]) == {
        "ReadmitServiceLatencyP95High", "ReadmitServiceErrorRate5xx", "ReadmitServiceErrorRate4xx",
    }  # fmt: skip
    pushgateway = inhibit[frozenset({"PushgatewayDown"})]
    assert "ReadmitMonitoringStale" in alertnames_in(pushgateway["target_matchers"])
    for rule in config["inhibit_rules"]:
        names = alertnames_in(rule["source_matchers"]) | alertnames_in(rule["target_matchers"])
        assert names <= set(rules), f"inhibit rule names unknown alerts {names - set(rules)}"
        assert rule["equal"] == ["stack"]  # same Prometheus; see the comment in the config


def test_render_fills_in_or_drops_the_webhook(tmp_path: Path) -> None:
    rendered = tmp_path / "config.yml"
    url = "https://hooks.example.org/readmit?token=a&b=c\\d"  # `&` and `\` stay literal
    done = render(tmp_path, url)
    assert done.returncode == 0, done.stderr
    check_config(rendered)
    (receiver,) = yaml.safe_load(rendered.read_text())["receivers"]
    assert receiver["webhook_configs"][0]["url"] == url
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600  # the URL may carry a token

    done = render(tmp_path, None)
    assert done.returncode == 0 and "UI only" in done.stderr
    check_config(rendered)
    config = yaml.safe_load(rendered.read_text())
    assert config["receivers"] == [{"name": RECEIVER}]  # a receiver that notifies nobody
    assert config["route"] == yaml.safe_load(CONFIG.read_text())["route"]
    assert PLACEHOLDER not in rendered.read_text()

    for bad in ("ftp://example.org/hook", "http://example.org/a b"):
        done = render(tmp_path, bad)
        assert done.returncode == 2 and "READMIT_ALERT_WEBHOOK_URL" in done.stderr, bad


def test_rendered_prometheus_config_sends_to_this_run_alertmanager(
    local_services: ModuleType, tmp_path: Path
) -> None:
    cfg = local_services.Config(run_dir=tmp_path)
    for alertmanager in ("127.0.0.1:19093", None):
        rendered = local_services.render_prometheus_config(
            cfg, 19090, "127.0.0.1:19091", alertmanager
        )
        done = subprocess.run(
            ["promtool", "check", "config", str(rendered)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        config = yaml.safe_load(rendered.read_text())
        if alertmanager is None:  # never to whatever else listens on 9093
            assert "alerting" not in config
        else:
            (sender,) = config["alerting"]["alertmanagers"]
            assert sender["static_configs"] == [{"targets": [alertmanager]}]


# ---------------------------------------------------------------- for real


def test_major_drift_pushed_by_monitoring_reaches_the_webhook(
    alert_stack: AlertStack, receiver: Receiver
) -> None:
    from readmit.monitoring import push_metrics
    from readmit.monitoring.drift import DriftReport, Severity

    status = http_json(f"{alert_stack.alertmanager}/api/v2/status")
    assert status["cluster"]["status"] == "disabled"
    model = "readmission:alert-test"
    report = DriftReport(
        batch_id="alert-test", n_rows=1000, severity=Severity.MAJOR, responsible=[], features=[]
    )
    started = time.monotonic()
    push_metrics(alert_stack.pushgateway, [report], model)  # what the monitoring flow pushes

    found = wait_for(
        lambda: receiver.alerts(alertname="ReadmitDriftMajor", model=model),
        90,
        "Alertmanager to post ReadmitDriftMajor to the webhook",
    )
    seconds = time.monotonic() - started
    note, alert = found[0]
    assert alert["status"] == "firing" and note["status"] == "firing"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["stack"] == "readmit-local"  # Prometheus' external label
    assert alert["annotations"]["summary"]
    assert note["receiver"] == RECEIVER
    assert note["groupLabels"] == {"alertname": "ReadmitDriftMajor", "severity": "critical"}
    assert alert["generatorURL"].startswith(alert_stack.prometheus)
    print(f"pushed major drift -> webhook notification: {seconds:.1f} s")


def test_a_down_service_inhibits_its_latency_and_error_alerts(
    alert_stack: AlertStack, receiver: Receiver
) -> None:
    """Alerts posted as Prometheus sends them (alerts.yml's labels plus the external `stack`)."""
    api = f"{alert_stack.alertmanager}/api/v2"
    stack, other = "readmit-inhibit-test", "readmit-inhibit-other"  # not this run's Prometheus
    now = datetime.now(UTC)

    def alert(name: str, stack: str, **labels: str) -> dict[str, Any]:
        severity = alert_rules()[name]["labels"]["severity"]
        return {
            "labels": {"alertname": name, "severity": severity, "stack": stack, **labels},
            "annotations": {"summary": f"test {name}"},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat(),
        }

    sources = [
        alert("ReadmitServiceDown", stack, job="readmit-service"),
        alert("PushgatewayDown", stack, job="pushgateway", instance="127.0.0.1:9091"),
    ]
    targets = [
        alert("ReadmitServiceLatencyP95High", stack, endpoint="/predict"),
        alert("ReadmitServiceErrorRate5xx", stack, endpoint="/predict"),
        alert("ReadmitServiceErrorRate4xx", stack, endpoint="/predict"),
        alert("ReadmitMonitoringStale", stack),
    ]
    control = alert("ReadmitServiceLatencyP95High", other, endpoint="/predict")
    started = time.monotonic()
    http_json(f"{api}/alerts", [*sources, *targets, control])

    def by_stack(s: str) -> dict[str, dict[str, Any]]:
        found = http_json(f"{api}/alerts")
        return {a["labels"]["alertname"]: a for a in found if a["labels"].get("stack") == s}

    posted = wait_for(lambda: len(by_stack(stack)) == 6 and by_stack(stack), 10, "the alerts")
    fingerprints = {name: a["fingerprint"] for name, a in posted.items()}
    for name in ("ReadmitServiceDown", "PushgatewayDown"):
        assert posted[name]["status"]["state"] == "active", posted[name]
    expected_source = {
        "ReadmitServiceLatencyP95High": "ReadmitServiceDown",
        "ReadmitServiceErrorRate5xx": "ReadmitServiceDown",
        "ReadmitServiceErrorRate4xx": "ReadmitServiceDown",
        "ReadmitMonitoringStale": "PushgatewayDown",
    }
    for name, source in expected_source.items():
        status = posted[name]["status"]
        assert status["state"] == "suppressed", (name, status)
        assert status["inhibitedBy"] == [fingerprints[source]], (name, status)
    # the same alert from another Prometheus (another `stack`) is not inhibited
    assert by_stack(other)["ReadmitServiceLatencyP95High"]["status"]["inhibitedBy"] == []

    # The receiver gets the sources (critical route: 10 s, warning: 30 s) and, from the latency
    # group, only the other stack's alert: the inhibited ones are never sent. The groups were
    # all created at the same moment, so once the warning ones arrived, every group has flushed.
    for name in ("ReadmitServiceDown", "PushgatewayDown"):
        wait_for(lambda n=name: receiver.alerts(alertname=n, stack=stack), 90, f"{name} delivered")
    latency = wait_for(
        lambda: receiver.alerts(alertname="ReadmitServiceLatencyP95High"), 90, "the latency group"
    )
    assert {a["labels"]["stack"] for _, a in latency} == {other}
    time.sleep(2)  # grace for groups flushed in the same instant
    delivered = {a["labels"]["alertname"] for _, a in receiver.alerts(stack=stack)}
    assert delivered == {"ReadmitServiceDown", "PushgatewayDown"}, delivered
    print(f"inhibition: posted -> latency group delivered {time.monotonic() - started:.1f} s")
