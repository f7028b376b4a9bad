"""Start and stop a live experiment on the locally deployed service, without downtime.

Starting builds the experiment's bento (champion and challenger packed together:
`deploy.build_bento(..., experiment=spec)`) and rolls the running service to it; stopping rolls
it back to a champion-only bento. Both go through the blue/green redeploy of
`readmit.ops.deploy` (`deploy_bento`: the new server answers /readyz before the old one is
stopped), so clients that follow the live server see no failed request
(tests/service/test_experiments.py rolls back under c8 load). A bento that fails to build or
start leaves the old server serving (`deploy.DeployError`).

The `experiment` deployment (a Prefect flow) calls these; like the deployment flow, each
returns a summary of the server now serving.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from readmit.experiments.spec import ExperimentSpec
from readmit.model import registry
from readmit.ops import deploy
from readmit.ops.processes import http_get
from readmit.settings import Settings, get_settings

logger = logging.getLogger("readmit.ops.experiments")


def bento_experiment(bento_tag: str, settings: Settings | None = None) -> ExperimentSpec | None:
    """The experiment a built bento serves (from its `--arg`s), None for a champion-only one."""
    args = deploy.bento_args(bento_tag, settings)
    return ExperimentSpec.from_bento_args(args, args.get("model_tag", ""))


def running_experiment(
    run_dir: Path | None = None, settings: Settings | None = None
) -> ExperimentSpec | None:
    """The experiment of the live local server's bento; None when it serves the champion alone
    or nothing runs."""
    current = deploy.running_server(run_dir)
    return bento_experiment(current.bento_tag, settings) if current else None


def served_experiment(url: str) -> dict[str, Any] | None:
    """What a server's /model says of its experiment (`serving.ExperimentInfo`: running or not
    and why, tags, per-variant counts); None without one or when /model does not answer."""
    status, body = http_get(f"{url}/model", timeout=5.0)
    if status != 200:
        return None
    info = json.loads(body).get("experiment")
    return dict(info) if info else None


def _summary(
    result: deploy.DeployResult, container: deploy.ContainerResult | None
) -> dict[str, Any]:
    """The deployment flow's summary of the new server, plus the experiment it serves."""
    return {
        "bento_tag": result.bento_tag,
        "model_tag": result.server.model_tag,
        "url": result.server.url,
        "pid": result.server.pid,
        "port": result.server.port,
        "replaced_pid": result.replaced.pid if result.replaced else None,
        "replaced_bento_tag": result.replaced.bento_tag if result.replaced else None,
        "container": container.message if container else "skipped",
        "dockerfile": container.dockerfile if container else None,
        "log_file": result.server.log_file,
        "curl": result.curl(),
        "experiment": served_experiment(result.server.url),
        "timings_s": result.timings_s,
    }


def _roll_to(
    bento_tag: str,
    build_s: float,
    *,
    containerize_image: bool,
    run_dir: Path | None,
    settings: Settings,
    ready_timeout_s: float,
    base_port: int | None,
) -> dict[str, Any]:
    container = deploy.containerize(bento_tag, settings) if containerize_image else None
    result = deploy.deploy_bento(
        bento_tag,
        run_dir=run_dir,
        settings=settings,
        ready_timeout_s=ready_timeout_s,
        base_port=base_port,
    )
    summary = _summary(result, container)
    summary["timings_s"] = {"build": round(build_s, 2), **result.timings_s}
    return summary


def start_experiment(
    spec: ExperimentSpec,
    *,
    bento_tag: str | None = None,
    containerize_image: bool = True,
    run_dir: Path | None = None,
    settings: Settings | None = None,
    ready_timeout_s: float = 120.0,
    base_port: int | None = None,
) -> dict[str, Any]:
    """Build the bento of `spec` (unless `bento_tag`, built by `deploy.build_bento(...,
    experiment=spec)`, is given), containerise it where Docker answers, and roll the running
    service to it (blue/green, no downtime).

    The summary's `experiment` is what the new server's /model says: `running` false (with the
    `reason`) when the challenger could not be loaded; the champion then serves alone.

    Raises:
        ValueError: `bento_tag` was not built for `spec`.
        DeployError: the build or the start failed; the old server keeps serving.
    """
    settings = settings or get_settings()
    t0 = time.monotonic()
    if bento_tag is None:
        bento_tag = deploy.build_bento(spec.champion, settings, experiment=spec)
    else:
        wanted = {"model_tag": spec.champion, **spec.bento_args()}
        if deploy.bento_args(bento_tag, settings) != wanted:
            raise ValueError(f"{bento_tag} was not built for experiment {spec.id}")
    summary = _roll_to(
        bento_tag,
        time.monotonic() - t0,
        containerize_image=containerize_image,
        run_dir=run_dir,
        settings=settings,
        ready_timeout_s=ready_timeout_s,
        base_port=base_port,
    )
    served = summary["experiment"]
    if not served or not served.get("running"):
        reason = served.get("reason") if served else "/model shows no experiment"
        logger.warning(
            "experiment %s: %s serves the champion alone: %s", spec.id, bento_tag, reason
        )
    return summary


def stop_experiment(
    champion_tag: str | None = None,
    *,
    bento_tag: str | None = None,
    containerize_image: bool = True,
    run_dir: Path | None = None,
    settings: Settings | None = None,
    ready_timeout_s: float = 120.0,
    base_port: int | None = None,
) -> dict[str, Any]:
    """Roll the running service back to the champion alone (blue/green, no downtime).

    The champion-only bento is `bento_tag` if given (e.g. the one served before the
    experiment), else built for `champion_tag`, by default the running experiment's champion
    (else the registry's production model). The summary's `stopped_experiment` names the
    experiment the replaced server was running (None if it ran none).

    Raises:
        ValueError: `bento_tag` serves an experiment itself.
        registry.NoModelError: no champion to serve.
        DeployError: the build or the start failed; the old server keeps serving.
    """
    settings = settings or get_settings()
    stopping = running_experiment(run_dir, settings)
    t0 = time.monotonic()
    if bento_tag is not None:
        if bento_experiment(bento_tag, settings) is not None:
            raise ValueError(f"{bento_tag} serves an experiment: not a champion-only bento")
    else:
        champion = (
            champion_tag
            or (stopping.champion if stopping else None)
            or registry.production_tag(settings)
        )
        if champion is None:
            raise registry.NoModelError("no champion to serve: no production model")
        bento_tag = deploy.build_bento(champion, settings)
    summary = _roll_to(
        bento_tag,
        time.monotonic() - t0,
        containerize_image=containerize_image,
        run_dir=run_dir,
        settings=settings,
        ready_timeout_s=ready_timeout_s,
        base_port=base_port,
    )
    summary["stopped_experiment"] = stopping.id if stopping else None
    return summary
