"""Shared by the integration tests that look at the stack from outside: a served bento,
Prometheus' HTTP API, Debian's headless Chromium driven by Playwright, and screenshot checks.

The bento is built and served with the same code as tests/service (`service_helpers.small_model`,
`readmit.ops.deploy.build_bento` / `start_server`), once per test process: `shared_bento` counts its
users, so two test modules' session fixtures share one server, stopped by the last of them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = PROJECT_ROOT / "test-output" / "screenshots"  # gitignored (test-output/)
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, from deployments/local/install.sh
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_PREFIXES = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")
BENTO_READY_TIMEOUT_S = 150
RETRAINING_SEARCH_BUDGET_S = 5.0
"""The `retraining` deployment's search budget in these tests (the flow's default is 60 s),
set by the `prefect_worker` fixture."""


# ---------------------------------------------------------------- served bento


@dataclass(frozen=True)
class ServedBento:
    """A `bentoml serve` of a bento built from the test model, ready on a loopback port."""

    url: str
    port: int
    pid: int
    model_tag: str
    bento_tag: str
    log_file: Path


_SHARED: dict[str, Any] = {"served": None, "users": 0, "built": None}


def service_helpers() -> ModuleType:
    """tests/service/service_helpers.py (small_model, encounter_json), imported by path."""
    name = "readmit_service_test_helpers"
    if name not in sys.modules:
        path = PROJECT_ROOT / "tests" / "service" / "service_helpers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def register_small_model(full_frame: pd.DataFrame) -> str:
    """The small test model (3,000 real encounters) saved as a candidate; its tag."""
    from readmit import data
    from readmit.model import registry
    from readmit.schema import INPUT_COLUMNS

    ordered = data.in_time_order(full_frame).iloc[20_000:23_000].reset_index(drop=True)
    train_frame = data.exclude_died_or_hospice(ordered)
    metadata = {
        "threshold": 0.15,
        "label_definition": "<30",
        "metrics": {"roc_auc": 0.61, "pr_auc": 0.17, "brier": 0.1},
        "trained_at": "2026-11-23T00:00:00+00:00",
        "feature_names": list(INPUT_COLUMNS),
    }
    model = service_helpers().small_model(train_frame)
    return registry.save_model(model, metadata, stage="candidate")


def small_bento(full_frame: pd.DataFrame) -> tuple[str, str]:
    """(model tag, bento tag) of the small test model, registered and `bentoml build`-packed
    once per test process."""
    from readmit.ops import deploy
    from readmit.settings import get_settings

    if _SHARED.get("built") is None:
        model_tag = register_small_model(full_frame)
        _SHARED["built"] = (model_tag, deploy.build_bento(model_tag, get_settings()))
    return _SHARED["built"]  # type: ignore[no-any-return]


def _start_bento(full_frame: pd.DataFrame, run_dir: Path) -> ServedBento:
    """Register the small test model, `bentoml build` it, serve it and wait until ready."""
    from readmit.ops import deploy

    model_tag, bento_tag = small_bento(full_frame)
    port = deploy.free_port()
    env = {"READMIT_PREDICTION_LOG_URI": str(run_dir / "prediction_logs")}
    proc, _, log_file = deploy.start_server(bento_tag, port, run_dir=run_dir, env=env)
    url = f"http://{deploy.HOST}:{port}"
    ok, reason = deploy.wait_ready(url, proc, BENTO_READY_TIMEOUT_S)
    if not ok:
        deploy.stop_server(proc.pid)
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise AssertionError(f"the test bento did not become ready: {reason}\n{tail}")
    return ServedBento(url, port, proc.pid, model_tag, bento_tag, log_file)


@contextmanager
def shared_bento(full_frame: pd.DataFrame, run_dir: Path) -> Iterator[ServedBento]:
    """The process-wide test bento: started by its first user, stopped after its last."""
    from readmit.ops import deploy

    if _SHARED["served"] is None:
        _SHARED["served"] = _start_bento(full_frame, run_dir)
    _SHARED["users"] += 1
    try:
        yield _SHARED["served"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            deploy.stop_server(_SHARED["served"].pid)
            _SHARED["served"] = None


# ---------------------------------------------------------------- HTTP and Prometheus


def http_json(url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """Status and decoded JSON of a GET (or a POST when `body` is given)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def prometheus_api(base: str, path: str, **params: str) -> dict[str, Any]:
    """GET Prometheus' HTTP API; the decoded body (status, data or errorType/error)."""
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    return http_json(url)[1]


def instant_query(base: str, expr: str) -> list[dict[str, Any]]:
    """Result vector of an instant query; AssertionError with Prometheus' message on error."""
    body = prometheus_api(base, "query", query=expr)
    if body.get("status") != "success":
        raise AssertionError(f"{body.get('errorType')}: {body.get('error')}\n  in: {expr}")
    return body["data"]["result"]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---------------------------------------------------------------- browser


def is_external(url: str) -> bool:
    """True for requests that would leave the machine (CDNs, analytics)."""
    return not url.startswith(LOOPBACK_PREFIXES)


@contextmanager
def chromium_page(profile_dir: Path) -> Iterator[tuple[Any, list[str]]]:
    """A page of Debian's headless Chromium (fresh profile), and the external URLs it tried.

    Playwright drives the system browser (`executable_path`), so nothing is downloaded
    (no `playwright install`). Requests leaving the machine are aborted and recorded: the
    pages must render from loopback alone, as they would on an offline hospital network.
    """
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: run `bash deployments/local/install.sh`")
    blocked: list[str] = []

    def abort(route: Any) -> None:
        blocked.append(route.request.url)
        route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 950},
        )  # fmt: skip
        try:
            context.route(is_external, abort)
            context.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)  # SPAs on a loaded 2-core machine
            page = context.pages[0] if context.pages else context.new_page()
            yield page, blocked
        finally:
            context.close()


def settle(page: Any, timeout_ms: float = 10_000) -> None:
    """Give lazy panels time to replace their loading skeletons (for the screenshot only:
    what a test asserts it waits for with `expect`)."""
    skeletons = page.locator('[data-slot="skeleton"], .animate-pulse')
    deadline = time.monotonic() + timeout_ms / 1000
    while skeletons.count() and time.monotonic() < deadline:
        page.wait_for_timeout(200)


def screenshot(page: Any, name: str) -> Path:
    """Full-page PNG under test-output/screenshots/, checked to show a rendered page."""
    settle(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert_rendered_png(path)
    return path


def assert_rendered_png(path: Path, min_size: tuple[int, int] = (800, 500)) -> None:
    """A real PNG of at least `min_size`, not a blank page: many colours, none covering it all."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        rgb = image.convert("RGB").resize((image.width // 2, image.height // 2))
        colours = rgb.getcolors(maxcolors=1 << 16) or [(0, None)] * (1 << 16)
    pixels = rgb.width * rgb.height
    dominant = max(count for count, _ in colours) if colours[0][1] is not None else 0
    assert len(colours) >= 32, f"{path}: only {len(colours)} colours, a blank page?"
    assert dominant < 0.97 * pixels, f"{path}: one colour covers {dominant / pixels:.1%}"
