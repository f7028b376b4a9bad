"""Schemathesis fuzzing of the served OpenAPI schema: no request may produce a 5xx.

Positive and negative cases (wrong types, out-of-range values, missing and extra fields, wrong
shapes) for every operation, a bounded number of examples each.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from service_helpers import Served

MAX_EXAMPLES = 40


OPERATIONS = [
    ("POST", "/predict", GenerationMode.POSITIVE),
    ("POST", "/predict", GenerationMode.NEGATIVE),
    ("POST", "/predict_batch", GenerationMode.POSITIVE),
    ("POST", "/predict_batch", GenerationMode.NEGATIVE),
    ("GET", "/model", GenerationMode.POSITIVE),
    ("GET", "/readyz", GenerationMode.POSITIVE),
]


@pytest.fixture(scope="session")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    """The OpenAPI document the bento serves, loaded from the running server."""
    return schemathesis.openapi.from_url(f"{served.url}/docs.json")


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_no_server_errors(
    api_schema: schemathesis.BaseSchema,
    served: Served,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    """Generated requests (schema-valid, or deliberately invalid) never get a 5xx.

    (Schemathesis' `pytest.from_fixture` does not work with pytest 9 yet, so the operation's
    Hypothesis strategy is driven here directly.)
    """
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)
    seen: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=served.url, timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
        )
        if path.startswith("/predict") and response.status_code >= 400:
            assert {"error", "problems"} <= set(response.json()), response.text[:500]
            assert "Traceback" not in response.text

    run()
    assert seen, "no request was generated"
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in seen), seen  # the invalid ones were rejected


def test_openapi_documents_the_contract(served: Served) -> None:
    doc = httpx.get(f"{served.url}/docs.json", timeout=10).json()
    assert {"/predict", "/predict_batch", "/model"} <= set(doc["paths"])
    batch = doc["paths"]["/predict_batch"]["post"]["requestBody"]["content"]["application/json"]
    items = batch["schema"]["properties"]["encounters"]
    assert items["maxItems"] == 1000 and items["minItems"] == 1
    encounter = doc["components"]["schemas"]["EncounterRequest"]["properties"]
    assert "glyburide-metformin" in encounter and "enum" in encounter["age"]
