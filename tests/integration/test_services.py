"""The local stack scripts for real: up / status / env / down through the CLI, as `make` runs them.

Each test uses its own run directory and free ports, so it never touches a developer's `.run/`
stack, and always runs `down` at the end, also when an assertion fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import s3fs
import stack_helpers as sh

from readmit.ops import processes

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICES_PY = PROJECT_ROOT / "deployments" / "local" / "services.py"
PROMETHEUS_DIR = PROJECT_ROOT / "deployments" / "prometheus"


def cli(run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the services CLI with the venv's interpreter, as the Makefile does."""
    return subprocess.run(
        [sys.executable, str(SERVICES_PY), "--run-dir", str(run_dir), *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=PROJECT_ROOT,
    )  # fmt: skip


def status(run_dir: Path) -> tuple[int, dict[str, Any]]:
    done = cli(run_dir, "status", "--json")
    return done.returncode, json.loads(done.stdout)


def get_json(url: str, data: bytes | None = None) -> Any:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(check, timeout: float, what: str) -> Any:
    """Poll until `check()` returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A private run directory (world-traversable: the postgres user must reach its data dir);
    whatever runs from it is stopped at the end."""
    path = Path(tempfile.mkdtemp(prefix="readmit-stack-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        cli(path, "down")
        shutil.rmtree(path, ignore_errors=True)


def test_prometheus_config_and_rules_pass_promtool(
    local_services: ModuleType, tmp_path: Path
) -> None:
    cfg = local_services.Config(run_dir=tmp_path, bento_target="127.0.0.1:3999")
    rendered = local_services.render_prometheus_config(cfg, 9999, "127.0.0.1:9998")

    for args in (
        ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        ["check", "config", str(rendered)],  # absolute rule paths: checks alerts.yml as well
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        ["test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")],
    ):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    text = rendered.read_text()
    assert "127.0.0.1:3999" in text and "127.0.0.1:9998" in text and "127.0.0.1:9999" in text


def test_up_status_env_down_round_trip(run_dir: Path) -> None:
    started = time.monotonic()
    done = cli(
        run_dir, "up", "--free-ports", "--no-deploy", "--no-serve", "--scrape-interval", "1s"
    )
    assert done.returncode == 0, done.stderr
    up_seconds = time.monotonic() - started

    code, report = status(run_dir)
    assert code == 0
    assert list(report) == [
        "prefect-server", "s3", "pushgateway", "alertmanager", "prometheus", "worker"
    ]  # fmt: skip
    assert all(row["running"] and row["healthy"] for row in report.values()), report
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in cli(run_dir, "env").stdout.splitlines()
    )

    # Prefect: healthy API, and the process pool exists with a worker polling it.
    api = report["prefect-server"]["urls"]["api"]
    assert env["PREFECT_API_URL"] == api
    assert get_json(f"{api}/health") is True
    pool = get_json(f"{api}/work_pools/readmit-process")
    assert (pool["type"], pool["status"]) == ("process", "READY")
    workers = get_json(f"{api}/work_pools/readmit-process/workers/filter", b"{}")
    assert len(workers) == 1

    # S3: the credentials printed by `env` write and read an object in the bucket.
    fs = s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True,
    )  # fmt: skip
    fs.pipe_file("readmit/round-trip.txt", b"ok")
    assert fs.cat_file("readmit/round-trip.txt") == b"ok"

    # Prometheus scrapes the Pushgateway; a pushed major drift becomes a firing alert.
    prom = report["prometheus"]["urls"]["ui"]
    push = report["pushgateway"]["urls"]["ui"]
    assert env["READMIT_PUSHGATEWAY_URL"] == push
    body = b"readmit_drift_severity 3\n"
    req = urllib.request.Request(f"{push}/metrics/job/readmit-monitoring", data=body, method="PUT")
    urllib.request.urlopen(req, timeout=10).close()

    def firing() -> list[str]:
        alerts = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
        return [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"]

    assert "ReadmitDriftMajor" in wait_for(firing, 30, "the drift alert to fire")
    targets = get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health["pushgateway"] == health["prometheus"] == "up"
    assert health["readmit-service"] in ("down", "unknown")  # no bento in this test

    # A second `up` keeps what runs: same PIDs, only health checks.
    pids = {name: row["pid"] for name, row in report.items()}
    started = time.monotonic()
    assert cli(run_dir, "up", "--no-deploy", "--no-serve").returncode == 0
    assert time.monotonic() - started < 30
    assert {name: row["pid"] for name, row in status(run_dir)[1].items()} == pids

    # A service that died is reported, then replaced by the next `up`.
    os.killpg(pids["pushgateway"], signal.SIGKILL)
    wait_for(lambda: status(run_dir)[0] == 1, 10, "status to report the dead pushgateway")
    assert cli(run_dir, "up", "--only", "pushgateway").returncode == 0
    code, report = status(run_dir)
    assert code == 0 and report["pushgateway"]["pid"] != pids["pushgateway"]

    # down stops every process group and frees every port.
    ports = [p for row in report.values() for p in row["ports"].values()]
    done = cli(run_dir, "down")
    assert done.returncode == 0 and "prefect-server" in done.stdout
    assert status(run_dir) == (0, {})
    for pid in (row["pid"] for row in report.values()):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not [p for p in ports if port_open(p)]
    print(f"cold up to all-healthy (no deploy, no bento): {up_seconds:.1f} s")


def free_port_pair() -> int:
    """A port p with p and p + 1 both free (the bento's blue/green pair)."""
    for _ in range(50):
        port = processes.free_port()
        if not port_open(port + 1):
            return port
    raise AssertionError("no free port pair")


def test_up_deploys_the_production_bento_and_down_stops_it(
    run_dir: Path, fresh_settings: Any, full_frame: Any
) -> None:
    from readmit.model import registry

    # Nothing to serve yet: `up` says so and still succeeds.
    bento_port = free_port_pair()
    args = ["up", "--only", "prefect-server,bento", "--free-ports", "--bento-port", str(bento_port)]
    done = cli(run_dir, *args, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "no production model yet" in done.stderr
    assert "bento" not in status(run_dir)[1]

    # With a production model (this test's own registry; the CLI inherits the env), the
    # deployment flow builds and serves it, recorded as a run on the stack's Prefect server.
    model_tag = sh.register_small_model(full_frame)
    registry.promote(model_tag, reason="test: make up serves production")
    done = cli(run_dir, *args, timeout=900)
    assert done.returncode == 0, done.stderr
    code, report = status(run_dir)
    assert code == 0, report
    bento = report["bento"]
    assert bento["healthy"] and bento["model"] == model_tag
    assert bento["ports"]["bento"] in (bento_port, bento_port + 1)
    assert get_json(f"{bento['urls']['api']}/model")["model_tag"] == model_tag
    api = report["prefect-server"]["urls"]["api"]
    runs = get_json(
        f"{api}/flow_runs/filter",
        json.dumps({"flows": {"name": {"any_": ["deployment"]}}}).encode(),
    )
    assert [r["state_type"] for r in runs] == ["COMPLETED"]

    # A second `up` keeps the serving bento; `down` stops it and frees its port.
    assert cli(run_dir, *args).returncode == 0
    assert status(run_dir)[1]["bento"]["pid"] == bento["pid"]
    done = cli(run_dir, "down")
    assert done.returncode == 0 and "bento" in done.stdout
    assert not port_open(bento["ports"]["bento"])
    assert (
        not Path(f"/proc/{bento['pid']}").exists()
        or "Z" in Path(f"/proc/{bento['pid']}/stat").read_text()
    )


def test_prefect_on_postgres(run_dir: Path) -> None:
    done = cli(run_dir, "up", "--db", "postgres", "--only", "postgres,prefect-server",
               "--free-ports")  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, report = status(run_dir)
    assert code == 0 and list(report) == ["postgres", "prefect-server"]
    assert get_json(f"{report['prefect-server']['urls']['api']}/health") is True

    # Prefect's tables are in our PostgreSQL database, not in a SQLite file.
    password = (run_dir / "postgres.env").read_text().split("PGPASSWORD=")[1].strip()
    query = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'"
    port = str(report["postgres"]["ports"]["postgres"])
    psql = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", port, "-U", "prefect", "-d", "prefect", "-tAc", query],
        env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert psql.stdout.strip() == "1"
    assert not (run_dir / "prefect" / "prefect.db").exists()

    # Asking for SQLite while the server runs on PostgreSQL is refused, not silently mixed.
    refused = cli(run_dir, "up", "--only", "prefect-server")
    assert refused.returncode == 2 and "runs on postgres" in refused.stderr

    assert cli(run_dir, "down").returncode == 0
    assert not port_open(int(port))


def test_ports_explicit_busy_is_an_error_default_busy_falls_back(
    local_services: ModuleType, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        state = {"services": {}, "ports": {}}
        cfg = local_services.Config(run_dir=tmp_path, ports={"prefect": taken})
        with pytest.raises(local_services.ServiceError, match=f"port {taken}"):
            local_services.choose_ports(cfg, state, ["prefect"])

        cfg = local_services.Config(run_dir=tmp_path)
        state = {"services": {}, "ports": {"prometheus": taken}}  # remembered, now busy
        chosen = local_services.choose_ports(cfg, state, ["prometheus"])
        assert chosen["prometheus"] != taken
        assert state["ports"]["prometheus"] == chosen["prometheus"]


def test_install_script_without_root_says_how_to_install() -> None:
    """`make test` runs the script first: without root or sudo, a missing package stops it with
    a message that names the packages and the command, not half-installed tests."""
    script = str(PROJECT_ROOT / "deployments" / "local" / "install.sh")
    env = {"PATH": "/usr/bin:/bin", "READMIT_SYSTEM_PACKAGES": "readmit-no-such-package"}
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", script]
    out = subprocess.run(as_nobody, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "readmit-no-such-package" in out.stderr
    assert "sudo bash deployments/local/install.sh" in out.stderr


def test_install_script_is_idempotent() -> None:
    """`make test` runs it before the tests; run again, it finds everything, installs nothing."""
    script = ["bash", str(PROJECT_ROOT / "deployments" / "local" / "install.sh")]
    first = subprocess.run(script, capture_output=True, text=True, check=False, timeout=900)
    assert first.returncode == 0, first.stderr
    started = time.monotonic()
    again = subprocess.run(script, capture_output=True, text=True, check=False, timeout=60)
    assert again.returncode == 0 and "all present" in again.stdout, again.stdout + again.stderr
    assert time.monotonic() - started < 5
    binaries = ("prometheus", "promtool", "prometheus-pushgateway", "prometheus-alertmanager",
                "amtool", "chromium", "chromedriver", "redis-server")  # fmt: skip
    for binary in binaries:
        assert shutil.which(binary), binary
