"""Deployment flow: build the bento -> containerise (where Docker answers) -> deploy locally.

Thin by design: each task calls one `readmit.ops.deploy` function. The local deploy is blue/green:
the new bento must answer /readyz before the old server is stopped, so a bad build or a model
that cannot load never takes the service down.

    python flows/deployment.py                 # production model
    python flows/deployment.py --model-tag readmission:<version> --no-containerize
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from readmit.experiments.spec import ExperimentSpec
from readmit.model import registry
from readmit.ops import deploy


@task(cache_policy=NO_CACHE)
def build(model_tag: str, experiment: ExperimentSpec | None = None) -> str:
    """`bentoml build` with the model (and an experiment's challenger) packed in; returns the
    bento tag."""
    bento_tag = deploy.build_bento(model_tag, experiment=experiment)
    beside = f" with {experiment.mode} {experiment.challenger}" if experiment else ""
    get_run_logger().info(
        "built %s for %s%s at %s", bento_tag, model_tag, beside, deploy.bento_dir(bento_tag)
    )
    return bento_tag


@task(cache_policy=NO_CACHE)
def containerise(bento_tag: str) -> deploy.ContainerResult:
    """Image where a Docker engine answers; otherwise a clear note naming the Dockerfile."""
    result = deploy.containerize(bento_tag)
    log = get_run_logger()
    (log.info if result.built else log.warning)(result.message)
    return result


@task(cache_policy=NO_CACHE)
def release(
    bento_tag: str, run_dir: str | None, ready_timeout_s: float, base_port: int | None
) -> deploy.DeployResult:
    """Start the new bento, wait for /readyz, then stop the old server."""
    result = deploy.deploy_bento(
        bento_tag,
        run_dir=Path(run_dir) if run_dir else None,
        ready_timeout_s=ready_timeout_s,
        base_port=base_port,
    )
    replaced = f", replaced pid {result.replaced.pid}" if result.replaced else ""
    get_run_logger().info(
        "serving %s at %s (pid %d%s)", bento_tag, result.server.url, result.server.pid, replaced
    )
    return result


@flow(name="deployment")
def deployment_flow(
    model_tag: str | None = None,
    containerize: bool = True,
    run_dir: str | None = None,
    ready_timeout_s: float = 120.0,
    base_port: int | None = None,
    experiment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, containerise and deploy `model_tag` (default: the production model).

    With `experiment` (an `ExperimentSpec` as a dict: the `experiment` flow passes it), the
    bento also carries the challenger and serves the experiment; the champion is its
    `champion`.

    The server listens on 127.0.0.1 at `base_port` or `base_port + 1` (blue/green; default
    `settings.service_port`); `.run/serving/state.json` (or `run_dir`) names the live one.

    Returns a summary: bento, model, URL, pid, the replaced server, a working curl.
    """
    spec = ExperimentSpec.from_dict(experiment) if experiment else None
    tag = (spec.champion if spec else None) or model_tag or registry.production_tag()
    if tag is None:
        raise registry.NoModelError("nothing to deploy: no production model; run `readmit train`")
    bento_tag = build(tag, spec)
    container = containerise(bento_tag) if containerize else None
    result = release(bento_tag, run_dir, ready_timeout_s, base_port)
    summary = {
        "bento_tag": bento_tag,
        "model_tag": tag,
        "url": result.server.url,
        "pid": result.server.pid,
        "port": result.server.port,
        "replaced_pid": result.replaced.pid if result.replaced else None,
        "container": container.message if container else "skipped",
        "dockerfile": container.dockerfile if container else None,
        "log_file": result.server.log_file,
        "curl": result.curl(),
    }
    create_markdown_artifact(
        key="deployment",
        markdown=f"## Deployed `{bento_tag}`\n\nModel `{tag}` at {result.server.url} "
        f"(pid {result.server.pid}).\n\nContainer: {summary['container']}\n\n"
        f"```\n{summary['curl']}\n```\n",
        description="readmission service deployment",
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: deploy and print the summary (the curl last)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-tag", help="model to serve (default: production)")
    parser.add_argument("--no-containerize", action="store_true")
    parser.add_argument("--run-dir", help="state/log folder (default: .run/serving)")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--base-port", type=int, help="blue/green pair base (default: 3000)")
    args = parser.parse_args(argv)
    if args.model_tag is None and registry.production_tag() is None:
        # Said before any flow run starts: "nothing to serve yet" is not a failed deployment.
        print("error: nothing to deploy: no production model; run `readmit train`", file=sys.stderr)
        return 2
    try:
        out = deployment_flow(
            model_tag=args.model_tag,
            containerize=not args.no_containerize,
            run_dir=args.run_dir,
            ready_timeout_s=args.ready_timeout,
            base_port=args.base_port,
        )
    except (registry.NoModelError, deploy.DeployError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    curl = out.pop("curl")
    print(json.dumps(out, indent=2))
    print(f"try it:\n{curl}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
