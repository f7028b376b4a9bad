"""Blue/green local deployment: the old server stops only after the new one is ready, and a
bad build or an unusable model never takes the service down. Also: what the bento contains."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
import yaml
from service_helpers import READY_TIMEOUT_S, Served

from readmit.model import registry
from readmit.ops import deploy, processes
from readmit.serving import example_encounter


def test_bento_contains_readmit_model_and_dockerfile(served: Served) -> None:
    root = deploy.bento_dir(served.bento_tag)
    src = root / "src"
    for module in (
        "serving/__init__.py",
        "model/registry.py",
        "schema.py",
        "features/history.py",
        "settings.py",
        "layout.py",
    ):
        assert (src / "readmit" / module).is_file(), module
    assert (src / "bentos" / "readmission" / "service.py").is_file()
    shipped = {p.relative_to(src).parts[0] for p in src.rglob("*") if p.is_file()}
    assert shipped <= {"readmit", "bentos", "bentofile.yaml", "deployments"}, shipped  # no data
    extra = {p.relative_to(src).as_posix() for p in (src / "deployments").rglob("*") if p.is_file()}
    assert extra == {"deployments/audit/sbom.cdx.json"}, extra  # only the SBOM
    info = yaml.safe_load((root / "bento.yaml").read_text())
    assert [m["tag"] for m in info["services"][0]["models"]] == [served.model_tag]
    assert info["args"] == {"model_tag": served.model_tag}
    dockerfile = (root / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "requirements.txt" in dockerfile and "ENTRYPOINT" in dockerfile
    reqs = (root / "env" / "python" / "requirements.txt").read_text()
    for pin in ("scikit-learn==1.9.1", "xgboost-cpu==3.2.0", "bentoml==1.4.39", "pandas=="):
        assert pin in reqs, pin


def test_containerize_names_the_dockerfile_without_docker(served: Served) -> None:
    result = deploy.containerize(served.bento_tag)
    if deploy.docker_engine_answers():  # a machine with Docker builds the image instead
        assert result.built and result.image
    else:
        assert not result.built and "no Docker engine answers" in result.message
        assert result.dockerfile in result.message and Path(result.dockerfile).is_file()


def _hammer(run_dir: Path, stop: threading.Event, codes: list[int | str]) -> None:
    """Score continuously against whatever the state file says is live."""
    body = example_encounter()
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            current = deploy.read_state(run_dir)
            try:
                codes.append(client.post(f"{current.url}/predict", json=body).status_code)
            except httpx.HTTPError as exc:
                codes.append(repr(exc))


def test_blue_green_swap_and_failed_deploys_keep_the_old_server(
    served: Served, run_root: Path
) -> None:
    run_dir, base = run_root / "deploy", deploy.free_port()
    first = deploy.deploy_bento(
        served.bento_tag, run_dir=run_dir, base_port=base, ready_timeout_s=READY_TIMEOUT_S
    )
    try:
        assert deploy.status(run_dir)["ready"] is True
        # 1. A build that fails (unknown model) never starts anything.
        with pytest.raises(deploy.DeployError, match="bentoml build failed"):
            deploy.deploy_latest(
                "readmission:doesnotexist",
                containerize_image=False,
                run_dir=run_dir,
                base_port=base,
            )
        # 2. A bento that builds but whose model cannot score: stopped, old one untouched.
        junk = registry.save_model("not a model", {"threshold": 0.5}, stage="candidate")
        with pytest.raises(deploy.DeployError, match="not usable"):
            deploy.deploy_latest(
                junk,
                containerize_image=False,
                run_dir=run_dir,
                base_port=base,
                ready_timeout_s=READY_TIMEOUT_S,
            )
        assert deploy.read_state(run_dir) == first.server
        assert deploy.status(run_dir)["ready"] is True
        # 3. A good bento replaces the old server with no failed request in between.
        stop, codes = threading.Event(), []
        worker = threading.Thread(target=_hammer, args=(run_dir, stop, codes))
        worker.start()
        try:
            second = deploy.deploy_bento(
                served.bento_tag, run_dir=run_dir, base_port=base, ready_timeout_s=READY_TIMEOUT_S
            )
        finally:
            stop.set()
            worker.join()
        assert second.replaced == first.server and second.server.port != first.server.port
        assert not processes.alive(first.server.pid)
        assert deploy.read_state(run_dir) == second.server
        assert len(codes) > 10 and set(codes) == {200}, codes[:20]
    finally:
        stopped = deploy.stop(run_dir)
        if processes.alive(first.server.pid):
            deploy.stop_server(first.server.pid)
    assert stopped is not None and not processes.alive(stopped.pid)
