"""The real bento and signed models: it names the digest of the model it serves, and refuses a
tampered one: `bentoml serve` of the session bento, whose packed model in the store it reads
was replaced after signing by a pipeline that loads and scores (without the signature check
this service would be ready), stays up, live, not ready, and answers the API with 503 and the
reason, never a 500."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import joblib
from service_helpers import READY_TIMEOUT_S, Served

from readmit.model import registry
from readmit.ops import deploy
from readmit.serving import example_encounter
from readmit.settings import get_settings


def test_the_service_names_the_digest_it_verified(client: httpx.Client, served: Served) -> None:
    info = client.get("/model").json()
    assert info["manifest_sha256"] == registry.model_digest(served.model_tag)


def _tampered_store(model_tag: str, store: Path) -> Path:
    """A model store holding the session model with its pipeline swapped after signing."""
    settings = get_settings()
    version = registry.version_of(model_tag)
    source = Path(settings.bentoml_home) / "models" / settings.model_name / version
    copy = store / "models" / settings.model_name / version
    shutil.copytree(source, copy)
    pipeline = registry.load_model(model_tag).model  # verified: the genuine one
    pipeline.set_params(model__n_estimators=5)  # still a working pipeline, other bytes
    joblib.dump(pipeline, copy / registry.MODEL_FILE)
    return copy


def test_the_service_refuses_a_tampered_model_and_says_why(
    bento_tag: str, model_tag: str, run_root: Path
) -> None:
    settings = get_settings()
    store = run_root / "tampered-store"
    _tampered_store(model_tag, store)
    tampered = settings.model_copy(update={"bentoml_home": str(store)})
    run_dir, port = run_root / "tampered", deploy.free_port()
    env = {  # its own stores: nothing to import, nothing shared with the session's server
        "READMIT_ARTIFACTS_URI": str(run_root / "tampered-artifacts"),
        "READMIT_PREDICTION_LOG_URI": str(run_root / "tampered-plogs"),
        "READMIT_HISTORY_STORE": f"sqlite://{run_root / 'tampered-history.sqlite'}",
    }
    bento_path = str(deploy.bento_dir(bento_tag, settings))  # packs model_tag
    proc, _, log_file = deploy.start_server(
        bento_path, port, run_dir=run_dir, settings=tampered, env=env
    )
    url = f"http://{deploy.HOST}:{port}"
    why = f"model {model_tag}: its files are not the ones that were signed (model.joblib changed)"
    try:
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert not ok and why in reason, f"{reason}\n{log_file.read_text()[-2000:]}"
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/livez").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["ready"] is False
            assert why in ready.json()["reason"]
            for resp in (client.post("/predict", json=example_encounter()), client.get("/model")):
                assert resp.status_code == 503, resp.text
                assert why in resp.json()["error"]
            assert "readmit_model_ready 0.0" in client.get("/metrics").text
        assert proc.poll() is None  # still up
    finally:
        deploy.stop_server(proc.pid)
