"""Fault drills run on the real parts: the session bento of tests/service, served by
`bentoml serve` (`readmit.ops.deploy`), and real HTTP.

This conftest makes the session fixtures of tests/service/conftest.py available here
(`feed_split`, `train_frame`, `model_tag`, `bento_tag`, `run_root`, `served`, `client`,
`holdout_rows`) and puts tests/service and tests/drills on `sys.path`, so a drill imports
`service_helpers` (encounter_json, shipped_rows, Served, READY_TIMEOUT_S) and `load` (c8 load
while something happens) by name. tests/service/conftest.py is loaded by path under another
module name: a conftest is not importable as `conftest` from another folder.

The fixtures are the same functions, registered again for this folder: when tests/service runs
in the same session, the drills build and serve their own copy of the bento (once per session).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DRILLS = Path(__file__).resolve().parent
SERVICE_TESTS = DRILLS.parent / "service"
for folder in (SERVICE_TESTS, DRILLS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _service_conftest() -> ModuleType:
    name = "readmit_service_test_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVICE_TESTS / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_service = _service_conftest()
feed_split = _service.feed_split
train_frame = _service.train_frame
model_tag = _service.model_tag
bento_tag = _service.bento_tag
run_root = _service.run_root
served = _service.served
client = _service.client
holdout_rows = _service.holdout_rows
served_history_uri = _service.served_history_uri
