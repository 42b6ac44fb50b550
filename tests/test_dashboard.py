"""The MLflow dashboard, checked in a real browser: a 3-trial study in a temporary store, a real
``mlflow server`` on a free loopback port, Debian's Chromium driven by Playwright.

Where Chromium or Playwright is missing the test is skipped with a message, except in CI (the
``CI`` environment variable set), where it fails: CI must run it. ``ARCHSELECT_SCREENSHOT_DIR``
keeps the screenshots there (the README's pictures come from it); else they stay in tmp_path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from archselect.run import run

pytestmark = pytest.mark.study  # every test here trains a real study

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches beyond this machine.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
WAIT_MS = 60_000  # the UI is a React app on a shared, busy machine: wait for content, not time
MODEL = "archselect-tabular_classification"


def _browser_or_skip() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append("Debian's chromium (apt-get install chromium; `make setup` does it as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -r requirements.lock)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run it")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(store: str, folder: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port, stopped (with its workers) on exit."""
    port = _free_port()
    log = (folder / "mlflow-server.log").open("w")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_cli), "server", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--artifacts-destination", str(folder / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("mlflow server did not start: "
                                + (folder / "mlflow-server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _close_assistant(page: Any) -> None:
    """MLflow 3.17 opens an assistant side panel; close it so the pages show what we review."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


@pytest.mark.slow
def test_a_study_reviewed_in_the_mlflow_dashboard(make_cfg, tmp_path: Path) -> None:
    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    result = run(make_cfg("task=tabular_classification", "data=iris", "search.n_trials=3",
                          "search.max_epochs=5", "search.study_name=review",
                          "tracking.system_metrics_interval=0.5"))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(MODEL)
    assert exp is not None and result.parent_run_id
    trials = client.search_runs([exp.experiment_id],
                                f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    names = sorted(r.info.run_name for r in trials)
    assert len(names) == 3 and names[0] == "trial-0 perceptron"

    shots = Path(os.environ.get("ARCHSELECT_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with mlflow_server(store, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1500, "height": 860},
        )
        # The page may ask only the server we started: any other request is refused.
        browser.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                      else route.abort())
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)

            # The runs table: the study's parent run, its three trials nested under it.
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
            parent_row = page.get_by_role("row").filter(has_text="review")
            expect(parent_row.first).to_be_visible()
            _close_assistant(page)
            expect(page.get_by_text("iris", exact=False).first).to_be_visible()  # the dataset
            parent_row.first.locator("[col-id='attributes.`Run Name`'] button").first.click()
            for name in names:
                expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
            page.screenshot(path=str(shots / "dashboard-runs.png"))

            # The parent run's artifacts: leaderboard and Optuna plots.
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{result.parent_run_id}"
                      "/artifacts")
            for folder, files in (("leaderboard", ["leaderboard.csv", "leaderboard.html"]),
                                  ("optuna", ["history.png", "param_importances.png",
                                              "parallel_coordinate.png", "plots.html"])):
                page.get_by_text(folder, exact=True).first.click()
                for file in files:
                    expect(page.get_by_text(file, exact=True).first).to_be_visible()
            page.get_by_text("history.png", exact=True).first.click()
            expect(page.get_by_role("img", name="optuna/history.png")).to_be_visible()
            _close_assistant(page)
            page.screenshot(path=str(shots / "dashboard-parent-artifacts.png"))

            # The registered model: version 1 holds the champion alias.
            page.goto(f"{url}/#/models/{MODEL}")
            version_row = page.get_by_role("row").filter(has_text="Version 1")
            expect(version_row.first).to_be_visible()
            expect(version_row.first).to_contain_text("champion")
            _close_assistant(page)
            page.screenshot(path=str(shots / "dashboard-registered-model.png"))
        finally:
            browser.close()
    for page_name in ("runs", "parent-artifacts", "registered-model"):
        assert (shots / f"dashboard-{page_name}.png").stat().st_size > 10_000
