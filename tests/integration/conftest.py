"""Real local servers for the integration tests: a Prefect server (+ worker) and SeaweedFS S3.

They are started by deployments/local/services.py, the same code as `make up`, on free loopback
ports, with temporary run directories (own PREFECT_HOME, own SQLite database, own S3 data,
random S3 credentials). Session-scoped: started once, on first use. Always stopped at the end of
the session, also when starting them or a test fails; and tied to this pytest process
(PR_SET_PDEATHSIG), so a killed test run does not leave servers behind.

Prefect reads its settings when `prefect` is imported, so a test that talks to the server from
this process should use `prefect.settings.temporary_settings({PREFECT_API_URL: server.api_url})`
(or run a subprocess with `server.env`); setting os.environ later has no effect on the client.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import stack_helpers as sh

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICES_PY = PROJECT_ROOT / "deployments" / "local" / "services.py"


def load_services() -> ModuleType:
    """deployments/local/services.py as a module (it is a script, not part of the package)."""
    name = "readmit_local_services"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVICES_PY)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass(frozen=True)
class PrefectServer:
    """A running Prefect server: URLs, the env a client needs, and its services.Config."""

    api_url: str
    ui_url: str
    env: dict[str, str]
    config: Any


@dataclass(frozen=True)
class PrefectWorker:
    """A process worker polling `pool` on the session's server; `deployed` if prefect.yaml was
    applied with `prefect --no-prompt deploy --all`."""

    pool: str
    deployed: bool
    server: PrefectServer


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS S3 store with one bucket and its own random credentials."""

    endpoint: str
    bucket: str
    env: dict[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, region
    config: Any


@pytest.fixture(scope="session")
def local_services() -> ModuleType:
    """The services module (Config, up, stop, status, client_env, ...)."""
    return load_services()


@pytest.fixture(scope="session")
def prefect_server(
    local_services: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """A real Prefect server (SQLite, own PREFECT_HOME) on a free loopback port."""
    cfg = local_services.Config(
        run_dir=tmp_path_factory.mktemp("prefect-run"), free_ports=True, tie_to_parent=True
    )
    try:
        local_services.up(cfg, only=["prefect-server"], run_deploy=False)
        state = local_services.load_state(cfg)
        urls = state["services"]["prefect-server"]["urls"]
        env = local_services.client_env(cfg, state) | {"PREFECT_HOME": str(cfg.prefect_home)}
        yield PrefectServer(api_url=urls["api"], ui_url=urls["ui"], env=env, config=cfg)
    finally:
        local_services.stop(cfg)


@pytest.fixture(scope="session")
def prefect_worker(
    local_services: ModuleType, prefect_server: PrefectServer
) -> Iterator[PrefectWorker]:
    """The `readmit-process` work pool, a process worker, and prefect.yaml deployed if present.

    The worker (and so every flow run it starts) inherits this process' environment, including
    the test-wide BENTOML_HOME / READMIT_ARTIFACTS_URI set by tests/conftest.py.
    """
    cfg = prefect_server.config
    try:
        local_services.up(cfg, only=["worker"], run_deploy=False)
        deployed = local_services.deploy(cfg)
        if deployed:
            asyncio.run(_shorten_retraining_search(prefect_server.api_url))
        yield PrefectWorker(pool=cfg.pool, deployed=deployed, server=prefect_server)
    finally:
        local_services.stop(cfg, ["worker"])


async def _shorten_retraining_search(api_url: str) -> None:
    """Give the `retraining` deployment a 5 s search, as an operator would in the UI: its runs
    (started by drift in several tests, also in the background of others) each spent a minute
    of both cores on an XGBoost search no test judges."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("retraining/retraining")
            budget = sh.RETRAINING_SEARCH_BUDGET_S
            parameters = {**deployment.parameters, "search_budget_s": budget}
            await client.update_deployment(deployment.id, DeploymentUpdate(parameters=parameters))
            updated = await client.read_deployment(deployment.id)
    assert updated.parameters["search_budget_s"] == budget, updated.parameters


@pytest.fixture(scope="session")
def s3_server(
    local_services: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    """A real SeaweedFS S3 store on free loopback ports, with random credentials and a bucket."""
    credentials = (f"test{secrets.token_hex(6)}", secrets.token_urlsafe(24))
    cfg = local_services.Config(
        run_dir=tmp_path_factory.mktemp("s3-run"), free_ports=True, tie_to_parent=True,
        bucket="readmit-test", credentials=credentials,
    )  # fmt: skip
    try:
        local_services.up(cfg, only=["s3"], run_deploy=False)
        state = local_services.load_state(cfg)
        record = state["services"]["s3"]
        yield S3Server(
            endpoint=record["urls"]["endpoint"], bucket=cfg.bucket,
            env=local_services.s3_env(cfg, record), config=cfg,
        )  # fmt: skip
    finally:
        local_services.stop(cfg)


@pytest.fixture
def s3_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh `s3://bucket/<random>` prefix, with the store's AWS_* env vars set for s3fs.

    s3fs caches filesystem instances by constructor arguments, not by env, so the cache is
    cleared around each test that changes the env.
    """
    import s3fs

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem.clear_instance_cache()
