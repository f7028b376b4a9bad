"""The promotion steps of the retraining flow in a process of their own, which SIGKILLs itself
at a chosen point (tests/drills/test_promotion_kill.py).

Run as `python promotion_driver.py SPEC.json`. The spec names the challenger (a pickled fitted
pipeline and the version to register it under), the champion it replaces, and optionally a kill
point: a function (`module:attribute`) wrapped in this process only, and whether the process
kills itself before or after the n-th call of it whose arguments mention `match`. Production
code carries no fault hooks: the hook is a monkeypatch here.

Steps, as `flows/retraining.py` runs them: `register_challenger` (`registry.save_model`), then
the real `settle` task function (`lifecycle.apply`: promote, mirror labels, audit line; then
`registry.publish_to_store`: archive, then the registry mirror). A challenger already in the
registry is not saved again: a rerun resumes from the last completed step (the version is the
flow's, fixed per run).
On success it prints one JSON line: the tag and the registry's production pointer.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))  # the `flows` package

# What the challenger won with: the gate's reasons go to the registry history and audit line.
WINS = {
    "promote": True,
    "reasons": ["challenger beats champion by +0.0100 ROC AUC (drill)"],
    "checked": ["roc_auc_margin"],
    "champion_auc": 0.66,
    "challenger_auc": 0.67,
}


def install_kill(kill: dict[str, Any]) -> None:
    """Wrap `kill["target"]` so that this process SIGKILLs itself at the chosen call."""
    module_name, attribute = kill["target"].split(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    match, nth, when = kill.get("match", ""), int(kill.get("nth", 1)), kill["when"]
    seen = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        hit = False
        if match in " ".join(map(str, (*args, *kwargs.values()))):
            seen += 1
            hit = seen == nth
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def main(spec_file: str) -> None:
    import joblib
    from prefect.logging import disable_run_logger

    from flows.retraining import settle
    from readmit.model import gates, lifecycle, registry
    from readmit.settings import get_settings

    spec = json.loads(Path(spec_file).read_text())
    if spec.get("kill"):
        install_kill(spec["kill"])
    settings = get_settings()
    tag = f"{settings.model_name}:{spec['version']}"
    if tag not in registry.read_state(settings).stages:  # else registered by the killed run
        model = joblib.load(spec["model_file"])
        metadata = {"threshold": 0.15, "label_definition": "<30", "champion": spec["champion"]}
        registry.save_model(model, metadata, version=spec["version"], settings=settings)
    gate = gates.GateResult(**WINS)
    with disable_run_logger():  # approved before settle (flows.approval); the drill kills after
        settle.fn(tag, lifecycle.decide_challenger(gate), gate, spec["champion"], None)
    print(json.dumps({"tag": tag, "production": registry.production_tag(settings)}))


if __name__ == "__main__":
    main(sys.argv[1])
