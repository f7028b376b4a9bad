"""BentoML's floor for `benchmarks/serving.py`: a /predict that reads the same request bodies and
returns a constant, on the same server stack (timeout fix, heap freeze, metrics, access log).

Whatever the readmission service costs above this is ours; below it is BentoML's HTTP stack.

    bentoml serve benchmarks.noop_service:Noop --port 3300   (READMIT_SERVE_WORKERS sets workers)
"""

from __future__ import annotations

import bentoml
from pydantic import BaseModel

from readmit.serving import runtime
from readmit.settings import get_settings

runtime.install_timeout_fix()


class Constant(BaseModel):
    probability: float
    risk: str


@bentoml.service(name="noop", workers=get_settings().serve_workers, traffic={"timeout": 60})
class Noop:
    """Answers every encounter with the same prediction."""

    def __init__(self) -> None:
        runtime.settle_heap()

    @bentoml.api(route="/predict")
    async def predict(self, age: str | None = None) -> Constant:
        """Reads one field of the body (BentoML still parses all of it) and answers at once."""
        return Constant(probability=0.1, risk="low")
