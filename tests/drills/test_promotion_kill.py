"""Drill: SIGKILL of the retraining flow at each step of promotion.

A small real model is champion (registered, promoted, audited, published to the artifact store).
For each kill point, a child process (tests/drills/promotion_driver.py) runs the promotion steps
of the retraining flow for a challenger (`registry.save_model`, then the real `settle` task
function) and SIGKILLs itself at that point. Then: the production pointer is exactly the old or
the new model, that model loads and scores a row, no temporary file passes for the registry, the
artifact store's mirror points to an archive that exists and is whole; and a rerun (the same
child, no kill) completes with the new model in production, one `promoted` audit line for it,
one promotion in the registry's history, a rollback that would restore the champion, and no
temporary file left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest

from readmit import data, storage
from readmit.model import gates, lifecycle, registry
from readmit.ops import audit
from readmit.schema import OUTCOME_COLUMNS
from readmit.serving import scoring
from readmit.settings import Settings

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "promotion_driver.py"
CHILD_TIMEOUT_S = 120

# name -> (target function, before/after, which matching call, substring its arguments must
# contain). `{model}` and `{version}` are filled in per test. In promotion order.
KILL_POINTS: dict[str, dict[str, Any]] = {
    "save:entering-joblib-dump": {"target": "joblib:dump", "when": "before"},
    # copytree's copy function is bound at import: copy2 -> copyfile is what can be wrapped.
    "save:store-copy-half-done": {
        "target": "shutil:copyfile", "when": "after", "match": "{model}/{version}/",
    },
    "save:stored-not-registered": {
        "target": "readmit.model.registry:_write_state", "when": "before",
    },
    "promote:temp-written-not-renamed": {
        "target": "os:replace", "when": "before", "match": "{model}-registry.json", "nth": 2,
    },
    "promote:replaced-labels-not-mirrored": {
        "target": "readmit.model.registry:_mirror_labels", "when": "before",
    },
    "mirror-labels:temp-not-renamed": {
        "target": "os:replace", "when": "before", "match": "model.yaml",
    },
    "settle:promoted-not-audited": {"target": "readmit.ops.audit:append", "when": "before"},
    "audit:temp-not-renamed": {
        "target": "fsspec.implementations.local:LocalFileSystem.mv", "when": "before",
        "match": "audit.jsonl",
    },
    "publish:archive-temp-not-renamed": {
        "target": "fsspec.implementations.local:LocalFileSystem.mv", "when": "before",
        "match": ".bentomodel",
    },
    "publish:archive-written-mirror-not": {
        "target": "readmit.storage:write_bytes", "when": "after", "match": ".bentomodel",
    },
    "publish:mirror-temp-not-renamed": {
        "target": "fsspec.implementations.local:LocalFileSystem.mv", "when": "before",
        "match": "registry/{model}-registry.json",
    },
    "settle:all-done": {
        "target": "readmit.storage:write_bytes", "when": "after",
        "match": "registry/{model}-registry.json",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def models(sample_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Champion and challenger (the service tests' small model on 2,000 / 3,000 real
    encounters), the challenger pickled for the child, and one feed row to score."""
    sys.path.insert(0, str(HERE.parent / "service"))
    from service_helpers import small_model

    train = data.exclude_died_or_hospice(sample_frame)
    challenger_file = tmp_path_factory.mktemp("drill-models") / "challenger.joblib"
    joblib.dump(small_model(train), challenger_file)
    row = sample_frame.tail(1).drop(columns=list(OUTCOME_COLUMNS), errors="ignore")
    return {"champion": small_model(train.head(2000)), "challenger_file": challenger_file,
            "row": row}  # fmt: skip


@pytest.fixture
def champion(fresh_settings: Settings, models: dict[str, Any]) -> Iterator[str]:
    """The champion as the training flow leaves it: promoted, audited, in the artifact store."""
    tag = registry.save_model(models["champion"], {"threshold": 0.15, "label_definition": "<30"})
    first = gates.GateResult(True, ["no champion: first production model"], [], None, 0.66)
    outcome = lifecycle.decide_first(first, has_production=False, promote_if_passing=True)
    lifecycle.apply(tag, outcome, first, champion=None, artifacts_uri=fresh_settings.artifacts_uri)
    registry.publish_to_store(tag)
    yield tag


def run_driver(spec: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """The driver in a child process with this test's stores (env from tests/conftest.py and
    `fresh_settings`). Its TMPDIR is the test's: what a SIGKILL leaves there (BentoML's
    half-made model folders) goes with the test, not into /tmp."""
    spec_file = workdir / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, str(DRIVER), str(spec_file)],
        env={**os.environ, "TMPDIR": str(workdir)},
        capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
    )  # fmt: skip


def temporaries(settings: Settings) -> tuple[list[str], list[str]]:
    """Files writers left half-way: (registry temporaries in BENTOML_HOME and label temporaries
    in the model folders; `*.tmp-*` files in the local artifact store)."""
    home = Path(settings.bentoml_home)
    prefixes = (f".{settings.model_name}-registry.json", ".registry-")  # now, and before the fix
    found = [p.name for p in home.iterdir() if p.name.startswith(prefixes)]
    models_dir = home / "models" / settings.model_name
    found += [str(p.relative_to(home)) for p in models_dir.glob("*/*.tmp")]
    artifacts = Path(settings.artifacts_uri)
    in_store = [str(p.relative_to(artifacts)) for p in artifacts.rglob("*.tmp-*")]
    return sorted(found), sorted(in_store)


def assert_serves(tag: str, settings: Settings, row: pd.DataFrame) -> None:
    """`tag` loads from the model store and scores a feed row as the service would."""
    loaded = registry.load_model(tag, settings)
    probability = scoring.served_probabilities(loaded.model, row)
    assert probability.shape == (1,) and 0.0 <= float(probability[0]) <= 1.0, probability


def assert_archive_whole(tag: str, settings: Settings) -> None:
    """The exported archive of `tag` exists in the artifact store and is a complete tarball
    with the model's files."""
    archive = Path(registry.exported_uri(tag, settings))
    assert archive.exists(), f"the store's mirror points to {tag}, whose archive is missing"
    with tarfile.open(archive) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"model.yaml", registry.MODEL_FILE} <= names, names


def assert_consistent(settings: Settings, old: str, new: str, row: pd.DataFrame) -> str:
    """After a kill: the pointer is old or new and serves; the store's mirror is usable."""
    path = Path(settings.bentoml_home) / f"{settings.model_name}-registry.json"
    on_disk = json.loads(path.read_text())  # whole JSON, never half a file
    production = on_disk["production"]
    assert production in (old, new), on_disk
    assert registry.read_state(settings).production == production  # readers see that file
    assert_serves(production, settings, row)
    listed = {m.tag: m.stage for m in registry.list_models(settings)}  # a torn save breaks no list
    assert listed.get(production) == "production", listed
    mirror_uri = settings.layout.registry_file(settings.model_name)
    if storage.exists(mirror_uri):
        mirror = storage.read_json(mirror_uri)
        assert mirror["production"] in (old, new), mirror
        assert_archive_whole(mirror["production"], settings)
    return str(production)


@pytest.mark.drill("sigkill_promotion")
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_during_promotion_leaves_old_or_new_and_a_rerun_completes(
    point: str, fresh_settings: Settings, champion: str, models: dict[str, Any], tmp_path: Path
) -> None:
    settings, row = fresh_settings, models["row"]
    version = registry.new_version()
    new = f"{settings.model_name}:{version}"
    kill = {k: v.format(model=settings.model_name, version=version) if isinstance(v, str) else v
            for k, v in KILL_POINTS[point].items()}  # fmt: skip
    spec = {"model_file": str(models["challenger_file"]), "version": version, "champion": champion}

    killed = run_driver({**spec, "kill": kill}, tmp_path)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    production = assert_consistent(settings, champion, new, row)
    stored = Path(settings.bentoml_home) / "models" / settings.model_name / version
    if stored.exists() and new not in registry.read_state(settings).stages:  # save not complete
        with pytest.raises(registry.NoModelError, match="never registered"):
            registry.promote(new)  # what the killed save left is not promotable
    print(f"{point}: after SIGKILL production is {'new' if production == new else 'old'}; "
          f"left behind: {temporaries(settings)}")  # fmt: skip

    rerun = run_driver(spec, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.splitlines()[-1]) == {"tag": new, "production": new}
    assert_consistent(settings, champion, new, row)
    state = registry.read_state(settings)
    assert state.production == new and state.stages[champion] == "archived", state
    promotions = [r for r in state.history if r["event"] == "promoted" and r["tag"] == new]
    assert [r["previous"] for r in promotions] == [champion], state.history
    assert registry.previous_production(state) == champion  # a rollback restores the champion
    promoted = [r for r in audit.read(settings.artifacts_uri) if r["decision"] == "promoted"]
    assert [(r["tag"], r["previous"]) for r in promoted] == [(champion, None), (new, champion)]
    mirror = storage.read_json(settings.layout.registry_file(settings.model_name))
    assert mirror["production"] == new and mirror["stages"][champion] == "archived", mirror
    assert_archive_whole(new, settings)
    in_home, in_store = temporaries(settings)
    assert in_home == []  # what a killed registry writer left is gone after the rerun
    # The local artifact store's writer (storage.write_bytes) leaves `<name>.tmp-<hex>` behind
    # when killed between write and rename: never read (readers open exact names, glob by
    # suffix), not reclaimed either (reported, not fixed here; S3 writes have no temporary).
    assert all(re.search(r"\.tmp-[0-9a-f]{32}$", name) for name in in_store), in_store
