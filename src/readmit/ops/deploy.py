"""Build the bento, containerise it where Docker answers, and deploy it locally without downtime.

Local deployment is blue/green on 127.0.0.1: the new bento starts with `bentoml serve` on the
other port of the pair (`service_port`, `service_port + 1`), must answer /readyz 200, and only
then is the old process stopped. A bento that fails to build, start or become ready is stopped
and reported; the old service keeps serving. The running server is recorded in
`<run_dir>/state.json` (pid, port, bento, model, log file).

Each server gets a BENTOML_HOME of its own (with `models/` and `bentos/` linked to the project
store): two `bentoml serve` processes on one BENTOML_HOME clobber each other's Prometheus
multiprocess directory, and blue/green always has two for a moment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from readmit.model import registry
from readmit.ops import processes
from readmit.ops.processes import HOST, free_port, http_get, port_free
from readmit.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from readmit.experiments.spec import ExperimentSpec

BENTOFILE = PROJECT_ROOT / "bentos" / "readmission" / "bentofile.yaml"


class DeployError(RuntimeError):
    """The new bento could not be built, started or made ready; the old one keeps serving."""


@dataclass(frozen=True)
class Server:
    """A `bentoml serve` process started by this module."""

    pid: int
    port: int
    bento_tag: str
    model_tag: str | None
    bentoml_home: str
    log_file: str
    started_at: str
    start_time: int | None = None
    """Start time of the process (clock ticks): with the pid, its identity (`ops.processes`)."""

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True)
class ContainerResult:
    """Outcome of the containerise step (skipped without a Docker engine)."""

    built: bool
    image: str | None
    dockerfile: str
    message: str


@dataclass(frozen=True)
class DeployResult:
    """What a deployment did: the server now serving and the one it replaced."""

    bento_tag: str
    server: Server
    replaced: Server | None
    container: ContainerResult | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def curl(self) -> str:
        """A curl command that scores the example encounter against the deployed server."""
        from readmit.serving import example_encounter

        body = json.dumps(example_encounter(), separators=(",", ":"))
        return (
            f"curl -s -X POST {self.server.url}/predict -H 'Content-Type: application/json' "
            f"-d '{body}'"
        )


def default_run_dir() -> Path:
    """Where local serving state, per-server homes and logs live (machine-local, not artifacts):
    `settings.serving_run_dir`."""
    return Path(get_settings().serving_run_dir)


def _bentoml_cmd() -> list[str]:
    return [sys.executable, "-m", "bentoml"]


def _env(settings: Settings, bentoml_home: str | None = None) -> dict[str, str]:
    """The environment of `bentoml` subprocesses: this process's stores, spelled out.

    The artifact store is passed explicitly: its default lives next to the code, and a served
    bento runs its own copy of the code, so left to its default the service would ship its
    prediction log into the bento's folder, where monitoring never looks; so is the served-history
    store monitoring writes and the service reads."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    env["BENTOML_HOME"] = bentoml_home or settings.bentoml_home
    env["READMIT_BENTOML_HOME"] = settings.bentoml_home
    env["READMIT_ARTIFACTS_URI"] = settings.artifacts_uri
    env["READMIT_HISTORY_STORE"] = settings.history_store_uri
    return env


# --------------------------------------------------------------------------- build / containerise


def build_bento(
    model_tag: str | None,
    settings: Settings | None = None,
    experiment: ExperimentSpec | None = None,
) -> str:
    """`bentoml build` of bentos/readmission with `model_tag` packed in; returns the bento tag.

    With `experiment`, the bento serves a live experiment: its `bento_args()` are passed as
    `--arg` too, the service packs the challenger beside the champion (the bento and its image
    carry both models) and serves them in the experiment's mode. The champion is `model_tag`
    (default: `experiment.champion`).

    Raises:
        ValueError: `model_tag` is not the experiment's champion.
        DeployError: the build failed (its output is in the message).
    """
    settings = settings or get_settings()
    if experiment is not None:
        model_tag = model_tag or experiment.champion
        if model_tag != experiment.champion:
            raise ValueError(
                f"experiment {experiment.id}: its champion is {experiment.champion}, "
                f"not {model_tag}"
            )
    cmd = [*_bentoml_cmd(), "build", "-f", str(BENTOFILE), "-o", "tag"]
    if model_tag:
        cmd += ["--arg", f"model_tag={model_tag}"]
    for name, value in (experiment.bento_args() if experiment else {}).items():
        cmd += ["--arg", f"{name}={value}"]
    cmd.append(str(PROJECT_ROOT))
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=_env(settings), capture_output=True, text=True, timeout=600
    )
    tag = next(
        (ln.split("__tag__:", 1)[1].strip() for ln in proc.stdout.splitlines() if "__tag__:" in ln),
        None,
    )
    if proc.returncode != 0 or not tag:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise DeployError(f"bentoml build failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return tag


def bento_dir(bento_tag: str, settings: Settings | None = None) -> Path:
    """Folder of a built bento in the store."""
    settings = settings or get_settings()
    name, version = bento_tag.split(":", 1)
    return Path(settings.bentoml_home) / "bentos" / name / version


def docker_engine_answers(timeout_s: float = 10.0) -> bool:
    """True when a `docker` CLI exists and `docker info` reaches an engine."""
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return proc.returncode == 0


def containerize(bento_tag: str, settings: Settings | None = None) -> ContainerResult:
    """`bentoml containerize` where a Docker engine answers; else say so and name the Dockerfile."""
    settings = settings or get_settings()
    dockerfile = str(bento_dir(bento_tag, settings) / "env" / "docker" / "Dockerfile")
    if not docker_engine_answers():
        return ContainerResult(
            built=False,
            image=None,
            dockerfile=dockerfile,
            message=f"no Docker engine answers (`docker info` failed or docker is not "
            f"installed): image not built. The bento's Dockerfile is {dockerfile}; build it "
            f"where Docker runs with `bentoml containerize {bento_tag}`.",
        )
    image = bento_tag
    proc = subprocess.run(
        [*_bentoml_cmd(), "containerize", bento_tag, "-t", image],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise DeployError(f"bentoml containerize failed: {proc.stderr.strip()[-2000:]}")
    return ContainerResult(True, image, dockerfile, f"image {image} built")


# --------------------------------------------------------------------------- processes


def choose_port(base_port: int, current: Server | None) -> int:
    """The other port of the blue/green pair; any free port if both are taken."""
    for port in (base_port, base_port + 1):
        if (current is None or port != current.port) and port_free(port):
            return port
    return free_port()


def server_home(run_dir: Path, port: int, settings: Settings) -> Path:
    """A BENTOML_HOME for one server: own Prometheus dir, shared models and bentos."""
    home = run_dir / "homes" / str(port)
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    store = Path(settings.bentoml_home)
    for sub in ("models", "bentos"):
        (store / sub).mkdir(parents=True, exist_ok=True)
        (home / sub).symlink_to(store / sub, target_is_directory=True)
    return home


def start_server(
    bento: str,
    port: int,
    *,
    run_dir: Path,
    settings: Settings | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start `bentoml serve <bento>` on HOST:port in its own session; returns (proc, home, log).

    `bento` is a bento tag (or a bento/service path for tests and benchmarks).
    """
    settings = settings or get_settings()
    home = server_home(run_dir, port, settings)
    log_file = run_dir / "logs" / f"serve-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*_bentoml_cmd(), "serve", bento, "--host", HOST, "--port", str(port)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env={**_env(settings, str(home)), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, home, log_file


def wait_ready(
    url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float
) -> tuple[bool, str]:
    """Poll /readyz until 200; stop early when the process exits or reports a model problem."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False, f"the server exited with code {proc.returncode}"
        status, raw = http_get(f"{url}/readyz", timeout=2.0)
        body = raw.decode(errors="replace")
        if status == 200:
            return True, "ready"
        if status == 503 and '"reason"' in body and "starting" not in body:
            return False, json.loads(body).get("reason", body)
        last = f"HTTP {status} {body[:200]}" if status else "no answer"
        time.sleep(0.25)
    return False, f"not ready after {timeout_s:.0f} s ({last})"


def stop_server(pid: int, started: int | None = None, timeout_s: float = 20.0) -> None:
    """SIGTERM the server's process group (arbiter and workers), SIGKILL after a grace period;
    with `started`, only while `pid` is still that process (`processes.stop_group`)."""
    processes.stop_group(pid, started, timeout_s=timeout_s)


# --------------------------------------------------------------------------- state


def state_file(run_dir: Path) -> Path:
    """The JSON file naming the server in service."""
    return run_dir / "state.json"


def read_state(run_dir: Path | None = None) -> Server | None:
    """The recorded current server, or None."""
    path = state_file(run_dir or default_run_dir())
    if not path.exists():
        return None
    current = json.loads(path.read_text()).get("current")
    return Server(**current) if current else None


def write_state(run_dir: Path, current: Server | None, previous: Server | None) -> None:
    """Replace the state file atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    body = {
        "current": asdict(current) if current else None,
        "previous": asdict(previous) if previous else None,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = state_file(run_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, state_file(run_dir))


def running_server(run_dir: Path | None = None) -> Server | None:
    """The recorded server if its process is still alive."""
    current = read_state(run_dir)
    return current if current and processes.alive(current.pid, current.start_time) else None


# --------------------------------------------------------------------------- deploy


def _bento_info(bento_tag: str, settings: Settings) -> dict[str, Any]:
    info = bento_dir(bento_tag, settings) / "bento.yaml"
    if not info.exists():
        return {}
    import yaml

    return dict(yaml.safe_load(info.read_text()) or {})


def bento_args(bento_tag: str, settings: Settings | None = None) -> dict[str, str]:
    """The `--arg` values a bento was built with (`model_tag`, a live experiment's)."""
    args = _bento_info(bento_tag, settings or get_settings()).get("args") or {}
    return {str(k): str(v) for k, v in args.items()}


def _bento_model_tag(bento_tag: str, settings: Settings) -> str | None:
    """The model a bento serves: its `model_tag` argument (an experiment's bento packs the
    challenger too), else its only packed model."""
    meta = _bento_info(bento_tag, settings)
    if (meta.get("args") or {}).get("model_tag"):
        return str(meta["args"]["model_tag"])
    models = [m["tag"] for svc in meta.get("services", []) for m in svc.get("models", [])]
    return models[0] if models else None


def deploy_bento(
    bento_tag: str,
    *,
    run_dir: Path | None = None,
    settings: Settings | None = None,
    ready_timeout_s: float = 120.0,
    base_port: int | None = None,
) -> DeployResult:
    """Start `bento_tag` next to the current server, switch when it is ready, stop the old one.

    The new server listens on `base_port` or `base_port + 1` (default `settings.service_port`),
    whichever the current one does not use.

    Raises:
        DeployError: the new server did not become ready; it was stopped, the old one still runs.
    """
    settings = settings or get_settings()
    run_dir = run_dir or default_run_dir()
    old = running_server(run_dir)
    port = choose_port(base_port or settings.service_port, old)
    t0 = time.monotonic()
    proc, home, log_file = start_server(bento_tag, port, run_dir=run_dir, settings=settings)
    ok, reason = wait_ready(f"http://{HOST}:{port}", proc, ready_timeout_s)
    if not ok:
        stop_server(proc.pid)
        still = f"; {old.bento_tag} keeps serving on port {old.port}" if old else ""
        raise DeployError(
            f"{bento_tag} did not become ready on port {port}: {reason}{still} (log: {log_file})"
        )
    new = Server(
        pid=proc.pid,
        port=port,
        bento_tag=bento_tag,
        model_tag=_bento_model_tag(bento_tag, settings),
        bentoml_home=str(home),
        log_file=str(log_file),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        start_time=processes.start_time(proc.pid),
    )
    write_state(run_dir, new, old)
    ready_s = time.monotonic() - t0
    if old is not None:
        stop_server(old.pid, old.start_time)
    return DeployResult(bento_tag, new, old, timings_s={"start_to_ready": round(ready_s, 2)})


def deploy_latest(
    model_tag: str | None = None,
    *,
    containerize_image: bool = True,
    run_dir: Path | None = None,
    settings: Settings | None = None,
    ready_timeout_s: float = 120.0,
    base_port: int | None = None,
) -> DeployResult:
    """Build a bento for `model_tag` (default: the production model), containerise, deploy.

    Raises:
        registry.NoModelError: no tag given and no production model.
        DeployError: build or start failed; whatever served before keeps serving.
    """
    settings = settings or get_settings()
    tag = model_tag or registry.production_tag(settings)
    if tag is None:
        raise registry.NoModelError("nothing to deploy: no production model; run `readmit train`")
    t0 = time.monotonic()
    bento_tag = build_bento(tag, settings)
    build_s = time.monotonic() - t0
    container = containerize(bento_tag, settings) if containerize_image else None
    result = deploy_bento(
        bento_tag,
        run_dir=run_dir,
        settings=settings,
        ready_timeout_s=ready_timeout_s,
        base_port=base_port,
    )
    timings = {"build": round(build_s, 2), **result.timings_s}
    return DeployResult(bento_tag, result.server, result.replaced, container, timings)


def stop(run_dir: Path | None = None) -> Server | None:
    """Stop the recorded server (if running) and clear the state; returns what was stopped."""
    run_dir = run_dir or default_run_dir()
    current = read_state(run_dir)
    if current and processes.alive(current.pid, current.start_time):
        stop_server(current.pid, current.start_time)
    write_state(run_dir, None, current)
    return current


def status(run_dir: Path | None = None) -> dict[str, Any]:
    """The recorded server, whether its process lives, and what /readyz says."""
    current = read_state(run_dir)
    if current is None:
        return {"running": False}
    alive = processes.alive(current.pid, current.start_time)
    code, raw = http_get(f"{current.url}/readyz", timeout=2.0) if alive else (0, b"")
    body = raw.decode(errors="replace")
    return {
        "running": alive,
        "ready": code == 200,
        "readyz": body.strip(),
        **asdict(current),
        "url": current.url,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m readmit.ops.deploy status|stop`: inspect or stop the locally deployed service."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m readmit.ops.deploy", description=main.__doc__)
    parser.add_argument("command", choices=["status", "stop"])
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "status":
        print(json.dumps(status(args.run_dir), indent=2))
    else:
        stopped = stop(args.run_dir)
        print(f"stopped pid {stopped.pid} (port {stopped.port})" if stopped else "nothing ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
