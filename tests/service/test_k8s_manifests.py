"""deployments/k8s/ parses, and its probes, ports and scaling agree with the service."""

from __future__ import annotations

from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[2] / "deployments" / "k8s"


def _docs() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def test_manifests_wire_probes_resources_service_and_hpa() -> None:
    docs = _docs()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Kustomization"} <= set(docs)
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]["spec"]["containers"][0]
    assert pod["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["ports"][0]["containerPort"] == 3000  # the bento image's EXPOSE
    assert {"cpu", "memory"} <= set(pod["resources"]["requests"]) <= set(pod["resources"]["limits"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == pod["ports"][0]["name"]
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    env = {e["name"] for e in pod["env"]}
    assert all(name.startswith(("READMIT_", "BENTOML_")) for name in env)
