"""Start, stop and inspect readmit's real local services: on 127.0.0.1 only, by PID, idempotently.

Services (in start order): PostgreSQL (only with `--db postgres`), the Prefect server, SeaweedFS S3,
the Prometheus Pushgateway, Alertmanager, Prometheus (it evaluates deployments/prometheus/alerts.yml
and sends what fires to that Alertmanager), and a Prefect process worker on the `readmit-process`
pool; then `prefect --no-prompt deploy --all` when the project has a `prefect.yaml`; then the
BentoML service: the deployment flow (recorded by the server, so it shows in the UI) builds the
production model's bento and serves it blue/green on 127.0.0.1:3000/3001 (`.run/serving/`).
Without a production model yet, `up` says so and the first promotion deploys it. `--no-serve`
skips the bento; with `--only`, name `bento` to include it (`--only prefect-server,bento`).

Everything lives under the run directory (`.run/` in the project, gitignored): `state.json`
(PIDs, process start times, ports), `logs/<service>.log`, the Prefect home and SQLite database,
the S3 data, Prometheus' and Alertmanager's data and rendered configs, and the generated local
secrets (`s3.env`, `postgres.env`, mode 0600). `down` stops by PID (the whole process group,
checked against the process start time so a recycled PID is never signalled) and keeps the data;
`down --purge` deletes it.

Alertmanager (Debian's `prometheus-alertmanager`, clustering off) routes by severity and inhibits
a down service's latency and error-rate alerts (deployments/alertmanager/alertmanager.yml). Its
webhook is `--alert-webhook-url`, else the READMIT_ALERT_WEBHOOK_URL env var; with neither, alerts
reach Alertmanager's UI only (`up` says so). The rendered config (mode 0600: a webhook URL may
carry a token) is `.run/alertmanager/alertmanager.yml`; to change the webhook, `down` and `up`.

Usage (from the project root, with the venv's interpreter so `prefect` and `weed` are found):

    .venv/bin/python deployments/local/services.py up [--db postgres] [--artifacts s3]
                                                      [--alert-webhook-url URL]
    .venv/bin/python deployments/local/services.py status [--json]
    .venv/bin/python deployments/local/services.py env       # eval "$(... env)" to use the stack
    .venv/bin/python deployments/local/services.py deploy
    .venv/bin/python deployments/local/services.py down [--purge]

The module is also imported by tests/integration/conftest.py (`Config`, `up`, `stop`, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from readmit.ops import processes
from readmit.ops.processes import HOST, free_port, http_get, port_free

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = PROJECT_ROOT / "deployments" / "prometheus"
ALERTMANAGER_DIR = PROJECT_ROOT / "deployments" / "alertmanager"
WEBHOOK_ENV = "READMIT_ALERT_WEBHOOK_URL"
"""Where Alertmanager posts alerts when Config.alert_webhook_url is None (render.sh reads it)."""

ORDER = ("postgres", "prefect-server", "s3", "pushgateway", "alertmanager", "prometheus", "worker")
"""Start order; `down` stops in reverse (the worker before the server, the server before its DB;
Prometheus before the Alertmanager it sends to)."""

DEFAULT_PORTS = {
    "prefect": 4200,
    "postgres": 5433,  # not 5432: Debian's own `main` cluster may be there
    "s3": 8333,
    "s3-master": 9333,
    "s3-volume": 9340,
    "s3-filer": 8888,
    "s3-admin": 23646,
    "pushgateway": 9091,
    "alertmanager": 9093,  # its cluster port (9094) stays closed: --cluster.listen-address=""
    "prometheus": 9090,
}
# SeaweedFS defaults each gRPC port to its HTTP port + 10000; we choose them explicitly instead.
DEFAULT_PORTS.update({f"{k}-grpc": v + 10000 for k, v in list(DEFAULT_PORTS.items()) if "s3" in k})
SERVICE_PORTS = {
    "postgres": ("postgres",),
    "prefect-server": ("prefect",),
    "s3": tuple(k for k in DEFAULT_PORTS if k.startswith("s3")),
    "pushgateway": ("pushgateway",),
    "alertmanager": ("alertmanager",),
    "prometheus": ("prometheus",),
    "worker": (),
}
TIMEOUTS = {  # seconds to healthy; generous for a loaded 2-core machine
    "postgres": 60, "prefect-server": 180, "s3": 60, "pushgateway": 30, "alertmanager": 30,
    "prometheus": 30, "worker": 90,
}  # fmt: skip
STOP_SIGNALS = {"postgres": signal.SIGINT}  # SIGTERM is postgres' "smart" (waits) shutdown

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes launched by this Python process, so `stop` can reap them (no zombies in tests)."""


class ServiceError(RuntimeError):
    """A service could not be started, found, or checked; the message says which and why."""


@dataclass
class Config:
    """What to run and where. The CLI builds one from flags; the test fixtures build their own."""

    run_dir: Path = PROJECT_ROOT / ".run"
    db: str = "sqlite"  # or "postgres"
    bucket: str = "readmit"
    pool: str = "readmit-process"
    ports: dict[str, int] = field(default_factory=dict)  # explicit choices, e.g. {"prefect": 4300}
    free_ports: bool = False  # pick free ephemeral ports instead of the well-known defaults
    # what Prometheus scrapes as job "readmit-service" (comma-separated: blue/green ports)
    bento_target: str = f"{HOST}:3000,{HOST}:3001"
    artifacts_s3: bool = False  # worker's flows use READMIT_ARTIFACTS_URI=s3://<bucket>/artifacts
    credentials: tuple[str, str] | None = None  # S3 key pair; else env, else .run/s3.env
    scrape_interval: str | None = None  # override prometheus.yml's global interval (tests)
    worker_env: dict[str, str] = field(default_factory=dict)  # extra env for the worker's flows
    tie_to_parent: bool = False  # children get SIGTERM if this process dies (test fixtures)
    serve: bool = False  # deploy the production bento at the end of `up` (the CLI's default)
    bento_port: int = 3000  # blue/green pair: bento_port and bento_port + 1
    # where Alertmanager posts alerts; None: the READMIT_ALERT_WEBHOOK_URL env var, else nowhere
    # (a receiver without a webhook: alerts show in Alertmanager's UI only)
    alert_webhook_url: str | None = None

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def prefect_home(self) -> Path:
        return self.run_dir / "prefect"

    @property
    def serving_dir(self) -> Path:
        """readmit.ops.deploy's state and server homes (`.run/serving` is also its own default, so
        the retraining flow's redeploy finds the service `up` started)."""
        return self.run_dir / "serving"


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    """Progress on stderr, so `env` and `status --json` keep a clean stdout."""
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """Path of an executable: the venv's bin first (prefect, weed), then PATH (Debian's)."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if not found:
        hint = "make install" if name in ("prefect", "weed") else "deployments/local/install.sh"
        raise ServiceError(f"`{name}` not found; run `{hint}` first")
    return found


def postgres_tool(name: str) -> str:
    """A PostgreSQL server binary: Debian keeps them in /usr/lib/postgresql/<major>/bin."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3])
    )
    if versions:
        return str(versions[-1])
    return tool(name)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (comments and blanks ignored)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip().removeprefix("export "): v.strip() for k, v in pairs if not k.startswith("#")}


def write_secret_file(path: Path, values: dict[str, str]) -> None:
    """Write KEY=value lines readable by the owner only (local secrets, never committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# generated by deployments/local/services.py; local use only\n")
        fh.writelines(f"{k}={v}\n" for k, v in values.items())


# ---------------------------------------------------------------- state and processes


def load_state(cfg: Config) -> dict[str, Any]:
    """The run directory's state: running services and the ports chosen before."""
    if cfg.state_file.exists():
        return json.loads(cfg.state_file.read_text())
    return {"services": {}, "ports": {}}


def save_state(cfg: Config, state: dict[str, Any]) -> None:
    """Write the state atomically (a crash never leaves half a JSON file)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(cfg.state_file)


def alive(record: dict[str, Any]) -> bool:
    """True if the recorded process still runs and is the very process we started."""
    return processes.alive(int(record["pid"]), record["start_time"])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the child gets SIGTERM when the process that started it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Spec:
    """How to run one service; `health_of` tells from its record whether it is healthy."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    urls: dict[str, str]
    cwd: Path = PROJECT_ROOT
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def launch(cfg: Config, spec: Spec) -> dict[str, Any]:
    """Start a service in its own session (process group); return its state record."""
    log_path = cfg.run_dir / "logs" / f"{spec.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} {' '.join(spec.argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            spec.argv, cwd=spec.cwd, env=spec.env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, user=spec.user,
            preexec_fn=_die_with_parent if cfg.tie_to_parent else None,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    started = processes.start_time(proc.pid)
    return {
        "pid": proc.pid, "start_time": -1 if started is None else started, "ports": spec.ports,
        "urls": spec.urls, "log": str(log_path), "argv": spec.argv, **spec.extra,
    }  # fmt: skip


def log_tail(record: dict[str, Any], lines: int = 25) -> str:
    """The end of a service's log, for error messages."""
    path = Path(record["log"])
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_healthy(name: str, record: dict[str, Any], health: Callable[[], bool], timeout: float):
    """Poll `health` until it passes; fail early, with the log's tail, if the process exits."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not alive(record):
            raise ServiceError(f"{name} exited during start-up; log {record['log']}:\n"
                               f"{log_tail(record)}")  # fmt: skip
        with contextlib.suppress(Exception):
            if health():
                log(f"{name} healthy ({time.monotonic() - started:.1f} s)")
                return
        time.sleep(0.3)
    raise ServiceError(f"{name} not healthy after {timeout:.0f} s; log {record['log']}:\n"
                       f"{log_tail(record)}")  # fmt: skip


def stop_record(name: str, record: dict[str, Any], timeout: float = 20.0) -> None:
    """Signal the service's whole process group, wait, then SIGKILL whatever is left
    (`readmit.ops.processes.stop_group`: never a recycled PID)."""
    pid = int(record["pid"])
    stopped = processes.stop_group(
        pid,
        record["start_time"],
        timeout_s=timeout,
        first_signal=STOP_SIGNALS.get(name, signal.SIGTERM),
    )
    if not stopped:
        log(f"{name}: pid {pid} now belongs to another process; left alone")
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


# ---------------------------------------------------------------- ports and secrets


def choose_ports(cfg: Config, state: dict[str, Any], keys: Iterable[str]) -> dict[str, int]:
    """Ports for the named keys: explicit > remembered > well-known default > a free one.

    Remembering keeps URLs (and SeaweedFS' master metadata, kept per port) stable across restarts.
    An explicit port that is busy is an error; any other busy port falls back to a free one.
    """
    taken = {p for rec in state["services"].values() for p in rec.get("ports", {}).values()}
    chosen: dict[str, int] = {}
    for key in keys:
        if key in cfg.ports:
            if not port_free(cfg.ports[key]):
                raise ServiceError(f"port {cfg.ports[key]} for {key} is already in use on {HOST}")
            port = cfg.ports[key]
        else:
            candidates = [] if cfg.free_ports else [state["ports"].get(key), DEFAULT_PORTS[key]]
            usable = [p for p in candidates if p and p not in taken and port_free(p)]
            port = usable[0] if usable else free_port(taken)
            if candidates and port != DEFAULT_PORTS[key] and port != state["ports"].get(key):
                log(f"port {DEFAULT_PORTS[key]} for {key} is busy; using {port}")
        chosen[key] = port
        taken.add(port)
    state["ports"].update(chosen)
    return chosen


def s3_credentials(cfg: Config, source: str | None = None) -> tuple[str, str, str]:
    """The S3 key pair and where it came from: given > AWS_* env > `.run/s3.env` > generated.

    `source` pins the origin recorded when the store started, so `status` and `env` use the
    pair the running store enforces (SeaweedFS takes it from its env at start, not from disk).
    """
    if cfg.credentials and source in (None, "given"):
        return cfg.credentials[0], cfg.credentials[1], "given"
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret and source in (None, "env"):
        return key, secret, "env"
    saved = read_env_file(cfg.run_dir / "s3.env")
    has_saved = bool(saved.get("AWS_ACCESS_KEY_ID") and saved.get("AWS_SECRET_ACCESS_KEY"))
    if has_saved and source in (None, "file"):
        return saved["AWS_ACCESS_KEY_ID"], saved["AWS_SECRET_ACCESS_KEY"], "file"
    if source is not None:
        raise ServiceError(f"the S3 store runs with credentials from {source!r}; set them again")
    key, secret = f"readmit{secrets.token_hex(6)}", secrets.token_urlsafe(30)
    write_secret_file(
        cfg.run_dir / "s3.env", {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    )
    return key, secret, "file"


def s3_env(cfg: Config, record: dict[str, Any]) -> dict[str, str]:
    """What an S3 client (s3fs, botocore, bentoml) needs to reach the local store."""
    key, secret, _ = s3_credentials(cfg, record.get("credentials_from"))
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": record["urls"]["endpoint"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def base_env() -> dict[str, str]:
    """The caller's environment without settings that would point a server elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true")
    return env


# ---------------------------------------------------------------- service definitions


def postgres_spec(cfg: Config, ports: dict[str, int]) -> Spec:
    """A private PostgreSQL cluster under .run/postgres, TCP on loopback only, no Unix socket."""
    pg_dir = cfg.run_dir / "postgres"
    data = pg_dir / "data"
    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    password = postgres_password(cfg)
    if not (data / "PG_VERSION").exists():
        pg_dir.mkdir(parents=True, exist_ok=True)
        pwfile = pg_dir / ".initdb-password"
        pwfile.write_text(password + "\n")
        if user:
            shutil.chown(pg_dir, user, user)
            shutil.chown(pwfile, user, user)
        try:
            subprocess.run(
                [postgres_tool("initdb"), "-D", str(data), "-U", "prefect", "-E", "UTF8",
                 "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                check=True, capture_output=True, user=user,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ServiceError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
    port = ports["postgres"]
    argv = [postgres_tool("postgres"), "-D", str(data), "-h", HOST, "-p", str(port), "-k", ""]
    return Spec(
        name="postgres", argv=argv, env=base_env(), ports=ports, user=user, cwd=pg_dir,
        urls={"dsn": f"postgresql://prefect@{HOST}:{port}/prefect"},
    )  # fmt: skip


def postgres_password(cfg: Config) -> str:
    """The local database password, generated once into `.run/postgres.env`."""
    path = cfg.run_dir / "postgres.env"
    saved = read_env_file(path).get("PGPASSWORD")
    if saved:
        return saved
    password = secrets.token_hex(16)
    write_secret_file(path, {"PGPASSWORD": password})
    return password


def ensure_prefect_database(cfg: Config, port: int) -> str:
    """Create the `prefect` database if missing; return Prefect's async connection URL."""
    password = postgres_password(cfg)
    env = {**os.environ, "PGPASSWORD": password}
    common = ["-h", HOST, "-p", str(port), "-U", "prefect"]
    query = "SELECT 1 FROM pg_database WHERE datname = 'prefect'"
    found = subprocess.run(
        [postgres_tool("psql"), *common, "-d", "postgres", "-tAc", query],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if found != "1":
        subprocess.run([postgres_tool("createdb"), *common, "prefect"], env=env, check=True)
    return f"postgresql+asyncpg://prefect:{password}@{HOST}:{port}/prefect"


def prefect_spec(cfg: Config, ports: dict[str, int], state: dict[str, Any]) -> Spec:
    """`prefect server start` on loopback, SQLite in .run/prefect or the local PostgreSQL."""
    cfg.prefect_home.mkdir(parents=True, exist_ok=True)
    port = ports["prefect"]
    if cfg.db == "postgres":
        database = ensure_prefect_database(cfg, state["services"]["postgres"]["ports"]["postgres"])
    else:
        database = f"sqlite+aiosqlite:///{cfg.prefect_home / 'prefect.db'}"
    api = f"http://{HOST}:{port}/api"
    env = base_env() | {
        "PREFECT_HOME": str(cfg.prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database,
        # The UI's API URL comes from settings, not from `--port`: without this, a server on
        # any port but 4200 serves a UI that calls 127.0.0.1:4200 and shows no data.
        "PREFECT_UI_API_URL": api,
    }
    argv = [tool("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    return Spec(
        name="prefect-server", argv=argv, env=env, ports=ports, extra={"db": cfg.db},
        urls={"ui": f"http://{HOST}:{port}", "api": api},
    )  # fmt: skip


def s3_spec(cfg: Config, ports: dict[str, int]) -> Spec:
    """`weed mini` (SeaweedFS all-in-one) with an S3 gateway that enforces our key pair."""
    data = cfg.run_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    key, secret, source = s3_credentials(cfg)
    flags = {
        "dir": data, "ip": HOST, "ip.bind": HOST, "bucket": cfg.bucket,
        "master.telemetry": "false", "webdav": "false", "s3.port.iceberg": 0, "s3.port.lance": 0,
        "filer.localSocket": data / "filer.sock", "s3.localSocket": data / "s3.sock",
    }  # fmt: skip
    for key_name, port in ports.items():  # s3 -> -s3.port, s3-master-grpc -> -master.port.grpc
        component = key_name.removeprefix("s3-").removesuffix("-grpc")
        component = "s3" if component in ("s3", "grpc") else component
        flags[f"{component}.port" + (".grpc" if key_name.endswith("-grpc") else "")] = port
    # -logtostderr: glog would otherwise leave weed.* files in /tmp; ours go to logs/s3.log.
    argv = [tool("weed"), "-logtostderr", "mini", *(f"-{k}={v}" for k, v in flags.items())]
    env = base_env() | {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    endpoint = f"http://{HOST}:{ports['s3']}"
    return Spec(
        name="s3", argv=argv, env=env, ports=ports, cwd=data,
        urls={"endpoint": endpoint, "bucket": f"s3://{cfg.bucket}",
              "filer_ui": f"http://{HOST}:{ports['s3-filer']}",
              "admin_ui": f"http://{HOST}:{ports['s3-admin']}"},
        extra={"bucket": cfg.bucket, "credentials_from": source},
    )  # fmt: skip


def s3_reachable(endpoint: str, key: str, secret: str, bucket: str) -> bool:
    """True if s3fs can list the bucket with these credentials (what every reader will do)."""
    import s3fs  # only needed here; keeps `down` and `status` of other services import-light

    fs = s3fs.S3FileSystem(
        key=key, secret=secret, endpoint_url=endpoint, skip_instance_cache=True,
        config_kwargs={"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}},
    )  # fmt: skip
    fs.ls(bucket, refresh=True)
    return True


def pushgateway_spec(cfg: Config, ports: dict[str, int]) -> Spec:
    """Debian's Pushgateway: where batch jobs (the monitoring flow) push their gauges."""
    data = cfg.run_dir / "pushgateway"
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{ports['pushgateway']}"
    argv = [
        tool("prometheus-pushgateway"), f"--web.listen-address={HOST}:{ports['pushgateway']}",
        f"--persistence.file={data / 'metrics.db'}", "--persistence.interval=30s",
    ]  # fmt: skip
    return Spec(
        name="pushgateway", argv=argv, env=base_env(), ports=ports, cwd=data, urls={"ui": url},
    )  # fmt: skip


def alert_webhook_url(cfg: Config) -> str | None:
    """Where Alertmanager posts: the Config's URL, else READMIT_ALERT_WEBHOOK_URL, else None."""
    return cfg.alert_webhook_url or os.environ.get(WEBHOOK_ENV) or None


def alertmanager_spec(cfg: Config, ports: dict[str, int]) -> Spec:
    """Debian's Alertmanager on loopback, clustering off, through render.sh.

    render.sh (also the container entrypoint in compose and Kubernetes) writes the config with
    the webhook URL from its env, then execs Alertmanager: the recorded PID is Alertmanager's.
    The URL travels in the env, never in argv or state.json (it may carry a token).
    """
    data = cfg.run_dir / "alertmanager"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "alertmanager.yml"
    webhook = alert_webhook_url(cfg)
    if webhook is None:
        log(f"alertmanager: no webhook (--alert-webhook-url or {WEBHOOK_ENV}): alerts are routed "
            "nowhere outside Alertmanager's UI")  # fmt: skip
    port = ports["alertmanager"]
    url = f"http://{HOST}:{port}"
    env = base_env() | {
        "ALERTMANAGER_TEMPLATE": str(ALERTMANAGER_DIR / "alertmanager.yml"),
        "ALERTMANAGER_CONFIG": str(config),
        WEBHOOK_ENV: webhook or "",
    }
    argv = [
        tool("sh"), str(ALERTMANAGER_DIR / "render.sh"), tool("prometheus-alertmanager"),
        f"--config.file={config}", f"--storage.path={data}", f"--web.listen-address={HOST}:{port}",
        "--cluster.listen-address=", f"--web.external-url={url}",
    ]  # fmt: skip
    return Spec(
        name="alertmanager", argv=argv, env=env, ports=ports, cwd=data,
        urls={"ui": url, "api": f"{url}/api/v2", "config": str(config)},
        extra={"webhook": webhook is not None},
    )  # fmt: skip


def render_prometheus_config(
    cfg: Config, prometheus_port: int, pushgateway: str, alertmanager: str | None = None
) -> Path:
    """Our prometheus.yml with this run's targets and absolute rule paths, under .run/.

    `alertmanager` (host:port) receives the alerts; without one the `alerting` block is dropped
    (rules are still evaluated, and never sent to whatever else listens on the default port).
    """
    import yaml  # PyYAML comes with prefect

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        "prometheus": f"{HOST}:{prometheus_port}",
        "pushgateway": pushgateway,
        "readmit-service": cfg.bento_target,
    }
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": targets[job["job_name"]].split(",")}]
    config["rule_files"] = [str(PROMETHEUS_DIR / r) for r in config.get("rule_files", [])]
    if alertmanager:
        senders = config.setdefault("alerting", {}).setdefault("alertmanagers", [{}])
        for sender in senders:
            sender["static_configs"] = [{"targets": [alertmanager]}]
    else:
        config.pop("alerting", None)
    if cfg.scrape_interval:
        config["global"]["scrape_interval"] = cfg.scrape_interval
        config["global"]["evaluation_interval"] = cfg.scrape_interval
    out = cfg.run_dir / "prometheus" / "prometheus.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def prometheus_spec(cfg: Config, ports: dict[str, int], state: dict[str, Any]) -> Spec:
    """Debian's Prometheus binary run directly (not its system service) on loopback."""
    push = state["services"].get("pushgateway", {}).get("ports", {}).get("pushgateway", 9091)
    alerts = state["services"].get("alertmanager", {}).get("ports", {}).get("alertmanager")
    config = render_prometheus_config(
        cfg, ports["prometheus"], f"{HOST}:{push}", f"{HOST}:{alerts}" if alerts else None
    )
    url = f"http://{HOST}:{ports['prometheus']}"
    argv = [
        tool("prometheus"), f"--config.file={config}",
        f"--storage.tsdb.path={cfg.run_dir / 'prometheus' / 'data'}",
        f"--web.listen-address={HOST}:{ports['prometheus']}", "--storage.tsdb.retention.time=15d",
        f"--web.external-url={url}",  # alerts link here, not to http://<hostname>:<port>
    ]  # fmt: skip
    return Spec(
        name="prometheus", argv=argv, env=base_env(), ports=ports, cwd=config.parent,
        urls={"ui": url, "alerts": f"{url}/alerts", "config": str(config)},
    )  # fmt: skip


def client_env(cfg: Config, state: dict[str, Any] | None = None) -> dict[str, str]:
    """Env vars a client of the running stack needs (worker, flows, CLI, `env` command)."""
    state = state or load_state(cfg)
    services = state["services"]
    env: dict[str, str] = {}
    if "prefect-server" in services:
        env["PREFECT_API_URL"] = services["prefect-server"]["urls"]["api"]
    if "s3" in services:
        env |= s3_env(cfg, services["s3"])
        if state.get("artifacts_s3"):
            env["READMIT_ARTIFACTS_URI"] = f"s3://{services['s3']['bucket']}/artifacts"
    if "pushgateway" in services:
        env["READMIT_PUSHGATEWAY_URL"] = services["pushgateway"]["urls"]["ui"]
    return env


def prefect_database_url(cfg: Config, state: dict[str, Any]) -> str:
    """The running Prefect server's database, as the backup flow reads it (an env var of the
    worker: it holds the PostgreSQL password)."""
    if state["services"]["prefect-server"].get("db") == "postgres":
        return ensure_prefect_database(cfg, state["services"]["postgres"]["ports"]["postgres"])
    return f"sqlite+aiosqlite:///{cfg.prefect_home / 'prefect.db'}"


def worker_spec(cfg: Config, state: dict[str, Any]) -> Spec:
    """A process worker on the pool; flow runs inherit its env (API URL, S3, artifact store)."""
    if "prefect-server" not in state["services"]:
        raise ServiceError("the worker needs the Prefect server: start `prefect-server` first")
    api = state["services"]["prefect-server"]["urls"]["api"]
    env = base_env() | {"PREFECT_HOME": str(cfg.prefect_home)} | client_env(cfg, state)
    env |= cfg.worker_env
    env.setdefault("READMIT_PROJECT_DIR", str(PROJECT_ROOT))
    env.setdefault("READMIT_PREFECT_DATABASE", prefect_database_url(cfg, state))  # for backups
    # A flow run outlives a Prefect server restart: 5 retries gave up during a 187 s outage
    # (the run stayed RUNNING for good); 8 completed it (test_drill_prefect_restart.py)
    env.setdefault("PREFECT_CLIENT_MAX_RETRIES", "8")
    name = f"readmit-local-{secrets.token_hex(4)}"
    argv = [tool("prefect"), "worker", "start", "--pool", cfg.pool, "--type", "process",
            "--name", name]  # fmt: skip
    return Spec(
        name="worker", argv=argv, env=env, ports={}, urls={"pool": f"{api}/work_pools/{cfg.pool}"},
        extra={"pool": cfg.pool, "name": name},
    )  # fmt: skip


def worker_online(api: str, pool: str, name: str) -> bool:
    """True once the worker of this name has sent a heartbeat (the pool's own status lags)."""
    req = urllib.request.Request(
        f"{api}/work_pools/{pool}/workers/filter", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        workers = json.loads(resp.read())
    return any(w["name"] == name and w.get("status") == "ONLINE" for w in workers)


def deploy(cfg: Config, timeout: float = 600) -> bool:
    """`prefect --no-prompt deploy --all` in the project root; False without a prefect.yaml."""
    if not (PROJECT_ROOT / "prefect.yaml").exists():
        log("no prefect.yaml: nothing to deploy")
        return False
    state = load_state(cfg)
    if "prefect-server" not in state["services"]:
        raise ServiceError("deploy needs a running Prefect server (`up` first)")
    env = base_env() | {"PREFECT_HOME": str(cfg.prefect_home)} | client_env(cfg, state)
    env |= cfg.worker_env
    env.setdefault("READMIT_PROJECT_DIR", str(PROJECT_ROOT))  # prefect.yaml's pull step uses it
    log_path = cfg.run_dir / "logs" / "deploy.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [tool("prefect"), "--no-prompt", "deploy", "--all"]
    done = subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    log_path.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServiceError(f"`prefect deploy --all` failed; the services stay up. Fix it, then "
                           f"run `deploy` again. Full log {log_path}:\n{tail}")  # fmt: skip
    log(f"deployed: {', '.join(deployment_names(state))}")
    return True


def deployment_names(state: dict[str, Any]) -> list[str]:
    """Names of the deployments the running server knows."""
    api = state["services"]["prefect-server"]["urls"]["api"]
    req = urllib.request.Request(
        f"{api}/deployments/filter", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        return sorted(dep["name"] for dep in json.loads(resp.read()))


def serve_bento(cfg: Config, state: dict[str, Any], timeout: float = 900) -> bool:
    """Deploy the production model's bento with the deployment flow, against the running server.

    The flow runs here (not on the worker) so `up` can wait for it; PREFECT_API_URL makes it a
    run in the UI all the same. Returns False, with a hint, when there is no production model.
    """
    env = base_env() | {"PREFECT_HOME": str(cfg.prefect_home)} | client_env(cfg, state)
    env |= cfg.worker_env
    argv = [sys.executable, str(PROJECT_ROOT / "flows" / "deployment.py"), "--no-containerize",
            "--run-dir", str(cfg.serving_dir), "--base-port", str(cfg.bento_port)]  # fmt: skip
    log_path = cfg.run_dir / "logs" / "bento-deploy.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log("bento: building and deploying the production model (deployment flow)...")
    done = subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    log_path.write_text(done.stdout + done.stderr)
    if done.returncode == 2 and "no production model" in done.stderr:
        log("bento: no production model yet. Train one (`make run`, `readmit train` or the "
            "`training` deployment); the retraining flow's promotion deploys it.")  # fmt: skip
        return False
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServiceError(f"the bento did not deploy; the other services stay up. "
                           f"Full log {log_path}:\n{tail}")  # fmt: skip
    return True


def bento_status(cfg: Config) -> dict[str, Any] | None:
    """The locally deployed bento as a status row (None if `up` never deployed one)."""
    if not (cfg.serving_dir / "state.json").exists():
        return None
    from readmit.ops import deploy  # the venv's readmit; only needed once a bento was deployed

    current = deploy.status(cfg.serving_dir)
    if "pid" not in current:
        return None
    url = current["url"]
    return {
        "pid": current["pid"], "running": current["running"], "healthy": current["ready"],
        "ports": {"bento": current["port"]},
        "urls": {"api": url, "swagger": f"{url}/", "metrics": f"{url}/metrics"},
        "log": current["log_file"], "model": current["model_tag"],
    }  # fmt: skip


def stop_bento(cfg: Config) -> bool:
    """Stop the deployed bento (if any); True if one was running."""
    row = bento_status(cfg)
    if row is None:
        return False
    from readmit.ops import deploy

    deploy.stop(cfg.serving_dir)
    return bool(row["running"])


# ---------------------------------------------------------------- up / down / status


def build_spec(name: str, cfg: Config, state: dict[str, Any]) -> Spec:
    """The spec of one service, with ports chosen now."""
    ports = choose_ports(cfg, state, SERVICE_PORTS[name])
    if name == "postgres":
        return postgres_spec(cfg, ports)
    if name == "prefect-server":
        return prefect_spec(cfg, ports, state)
    if name == "s3":
        return s3_spec(cfg, ports)
    if name == "pushgateway":
        return pushgateway_spec(cfg, ports)
    if name == "alertmanager":
        return alertmanager_spec(cfg, ports)
    if name == "prometheus":
        return prometheus_spec(cfg, ports, state)
    return worker_spec(cfg, state)


def health_of(name: str, cfg: Config, record: dict[str, Any]) -> Callable[[], bool]:
    """Health check of an already running service, rebuilt from its record."""
    urls = record["urls"]
    if name == "prefect-server":
        return lambda: http_get(f"{urls['api']}/health") == (200, b"true")
    if name == "worker":
        api = urls["pool"].rsplit("/work_pools/", 1)[0]
        return lambda: worker_online(api, record["pool"], record["name"])
    if name == "s3":
        key, secret, _ = s3_credentials(cfg, record.get("credentials_from"))
        return lambda: s3_reachable(urls["endpoint"], key, secret, record["bucket"])
    if name == "postgres":
        port = str(record["ports"]["postgres"])
        ready = [postgres_tool("pg_isready"), "-q", "-h", HOST, "-p", port, "-U", "prefect"]
        return lambda: subprocess.run(ready, check=False).returncode == 0
    return lambda: http_get(f"{urls['ui']}/-/ready")[0] == 200


def healthy(name: str, cfg: Config, record: dict[str, Any]) -> bool:
    """One health probe of a recorded service (False on any error)."""
    try:
        return alive(record) and health_of(name, cfg, record)()
    except Exception:
        return False


def start_group(cfg: Config, state: dict[str, Any], names: list[str], launched: list[str]):
    """Start the not-yet-running services of a group together, then wait until all are healthy."""
    waiting: list[tuple[str, Callable[[], bool]]] = []
    for name in names:
        record = state["services"].get(name)
        if record and alive(record):
            if name == "prefect-server" and record.get("db") != cfg.db:
                raise ServiceError(f"the Prefect server runs on {record.get('db')}, not {cfg.db}: "
                                   "run `down` first")  # fmt: skip
            log(f"{name} already running (pid {record['pid']})")
            waiting.append((name, health_of(name, cfg, record)))
            continue
        record = state["services"][name] = launch(cfg, build_spec(name, cfg, state))
        launched.append(name)
        save_state(cfg, state)
        log(f"{name} started (pid {record['pid']})")
        waiting.append((name, health_of(name, cfg, record)))
    for name, check in waiting:
        wait_healthy(name, state["services"][name], check, TIMEOUTS[name])


def up(cfg: Config, only: Iterable[str] | None = None, run_deploy: bool = True) -> float:
    """Start the stack (or `only` some services) and wait until healthy; seconds taken.

    Idempotent: running services are kept (and checked), dead records are replaced. On failure
    the services this call launched are stopped again; their logs stay in .run/logs/.
    """
    t0 = time.monotonic()
    wanted = [n for n in ORDER if n != "postgres" or cfg.db == "postgres"]
    if only is not None:
        wanted = [n for n in ORDER if n in set(only)]
    state = load_state(cfg)
    for name, record in list(state["services"].items()):
        if not alive(record):
            del state["services"][name]  # died or machine restarted: start it afresh
    state["artifacts_s3"] = cfg.artifacts_s3 or state.get("artifacts_s3", False)
    launched: list[str] = []
    try:
        for group in (
            ["postgres"],
            ["prefect-server", "s3", "pushgateway", "alertmanager", "prometheus"],
        ):
            start_group(cfg, state, [n for n in group if n in wanted], launched)
        if "worker" in wanted:  # `--type process` makes the worker create the pool if missing
            start_group(cfg, state, ["worker"], launched)
    except BaseException:
        stop(cfg, launched)
        raise
    if run_deploy and "prefect-server" in state["services"] and "worker" in wanted:
        deploy(cfg)
    serve_wanted = only is None or "bento" in set(only)  # `--only` names "bento" to include it
    if cfg.serve and serve_wanted and "prefect-server" in state["services"]:
        row = bento_status(cfg)
        if row and row["healthy"]:
            log(f"bento already serving {row['model']} (pid {row['pid']})")
        else:
            serve_bento(cfg, state)
    return time.monotonic() - t0


def stop(cfg: Config, names: Iterable[str] | None = None) -> list[str]:
    """Stop recorded services (all, or `names`) in reverse start order; returns what was stopped."""
    state = load_state(cfg)
    stopped = []
    if (names is None or "bento" in names) and stop_bento(cfg):
        stopped.append("bento")
    names = set(state["services"]) if names is None else set(names)
    for name in reversed(ORDER):
        record = state["services"].get(name)
        if name in names and record:
            was_alive = alive(record)
            stop_record(name, record)
            if was_alive:
                stopped.append(name)
            del state["services"][name]
            save_state(cfg, state)
    return stopped


def status(cfg: Config) -> dict[str, dict[str, Any]]:
    """What runs where: per recorded service, pid, running, healthy, ports and URLs."""
    state = load_state(cfg)
    report: dict[str, dict[str, Any]] = {}
    for name in [n for n in ORDER if n in state["services"]]:
        record = state["services"][name]
        report[name] = {
            "pid": record["pid"], "running": alive(record), "healthy": healthy(name, cfg, record),
            "ports": record["ports"], "urls": record["urls"], "log": record["log"],
        }  # fmt: skip
    bento = bento_status(cfg)
    if bento is not None:
        report["bento"] = bento
    return report


def print_status(cfg: Config, report: dict[str, dict[str, Any]]) -> None:
    """Human-readable `status`."""
    if not report:
        print(f"nothing running (run dir {cfg.run_dir})")
        return
    print(f"readmit local stack (run dir {cfg.run_dir})")
    for name, row in report.items():
        state = "healthy" if row["healthy"] else ("UNHEALTHY" if row["running"] else "STOPPED")
        urls = "  ".join(f"{k}={v}" for k, v in row["urls"].items() if k != "config")
        print(f"  {name:<15} {state:<9} pid {row['pid']:<8} {urls}")
    state = load_state(cfg)
    if report.get("prefect-server", {}).get("healthy"):
        with contextlib.suppress(Exception):
            print(f"  deployments: {', '.join(deployment_names(state)) or '(none)'}")
    if "s3" in report:
        source = state["services"]["s3"].get("credentials_from")
        where = cfg.run_dir / "s3.env" if source == "file" else "your AWS_* env vars"
        print(f"  S3 credentials: {where}")
    if "alertmanager" in report:
        if state["services"]["alertmanager"].get("webhook"):
            print("  alerts: Alertmanager posts them to the webhook")
        else:
            print(f"  alerts: Alertmanager's UI only (no --alert-webhook-url or {WEBHOOK_ENV})")
    print('  use it from a shell: eval "$(.venv/bin/python deployments/local/services.py env)"')


def purge(cfg: Config) -> None:
    """Delete the run directory's data (databases, S3 objects, logs, generated secrets)."""
    if cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)


# ---------------------------------------------------------------- CLI

PORT_FLAGS = ("prefect", "s3", "prometheus", "pushgateway", "alertmanager", "postgres")
"""Port keys with a `--<key>-port` flag of `up`."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=PROJECT_ROOT / ".run")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack (idempotent)")
    p_up.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p_up.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)},bento")
    p_up.add_argument("--no-deploy", action="store_true", help="skip `prefect deploy --all`")
    p_up.add_argument("--artifacts", choices=("local", "s3"), default="local",
                      help="s3: the worker's flows use s3://<bucket>/artifacts")  # fmt: skip
    p_up.add_argument("--bucket", default="readmit")
    p_up.add_argument(
        "--bento-target",
        help="host:port[,host:port] Prometheus scrapes (default: the --bento-port pair)",
    )
    p_up.add_argument("--free-ports", action="store_true", help="use free ports, not the defaults")
    p_up.add_argument("--no-serve", action="store_true", help="do not deploy the bento")
    p_up.add_argument("--bento-port", type=int, default=3000,
                      help="blue/green pair base of the bento (3000: 3000 and 3001)")  # fmt: skip
    p_up.add_argument("--scrape-interval", help="override Prometheus' interval, e.g. 2s")
    p_up.add_argument(
        "--alert-webhook-url",
        help=f"where Alertmanager posts alerts (default: ${WEBHOOK_ENV}; none: its UI only)",
    )
    for key in PORT_FLAGS:
        p_up.add_argument(f"--{key}-port", type=int, help=f"default {DEFAULT_PORTS[key]}")
    p_down = sub.add_parser("down", help="stop everything started here (by PID)")
    p_down.add_argument("--purge", action="store_true", help="also delete data, logs and secrets")
    p_status = sub.add_parser("status", help="what runs where; exit 1 if something is unhealthy")
    p_status.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print `export` lines for clients of the running stack")
    sub.add_parser("deploy", help="apply prefect.yaml to the running server")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config(run_dir=args.run_dir.resolve())
    try:
        if args.command == "up":
            cfg.db, cfg.bucket, cfg.bento_port = args.db, args.bucket, args.bento_port
            cfg.serve = not args.no_serve
            cfg.bento_target = args.bento_target or (
                f"{HOST}:{args.bento_port},{HOST}:{args.bento_port + 1}"
            )
            cfg.free_ports, cfg.artifacts_s3 = args.free_ports, args.artifacts == "s3"
            cfg.scrape_interval = args.scrape_interval
            cfg.alert_webhook_url = args.alert_webhook_url
            for key in PORT_FLAGS:
                if getattr(args, f"{key}_port"):
                    cfg.ports[key] = getattr(args, f"{key}_port")
            only = args.only.split(",") if args.only else None
            unknown = set(only or ()) - {*ORDER, "bento"}
            if unknown:
                raise ServiceError(f"unknown service(s) {sorted(unknown)}; choose from {ORDER}")
            seconds = up(cfg, only=only, run_deploy=not args.no_deploy)
            print_status(cfg, status(cfg))
            print(f"all healthy in {seconds:.1f} s")
        elif args.command == "down":
            stopped = stop(cfg)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            if args.purge:
                purge(cfg)
                print(f"deleted {cfg.run_dir}")
        elif args.command == "status":
            report = status(cfg)
            print(json.dumps(report, indent=2)) if args.json else print_status(cfg, report)
            return 0 if all(row["healthy"] for row in report.values()) else 1
        elif args.command == "env":
            for key, value in client_env(cfg).items():
                print(f"export {key}={value}")
        elif args.command == "deploy":
            deploy(cfg)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
