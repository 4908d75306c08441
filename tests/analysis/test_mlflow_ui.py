"""The MLflow UI really shows a study: `mlflow ui` on loopback over a real study store, driven by headless Chromium.

The store is laid out by painvrl.study.tracking + summarise_study (report_store.make_study), the study report is
logged to the parent run, then the UI's runs page must list the parent run ``study:<name>`` with its trial runs
(expanded under it) and the parent's artifact page must list front.csv. Screenshots are saved under the test's
tmp folder, or under $PAINVRL_UI_SCREENSHOT_DIR when set (to look at them).

Uses Selenium + the system chromedriver when both are there, else (or with PAINVRL_UI_NO_SELENIUM=1) Chromium's
own --dump-dom/--screenshot.
Skipped only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_store import fresh_tracking_uri, make_study

from painvrl.analysis.report import build_report
from painvrl.study import tracking

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1500,1000"]
STUDY = "ui-study"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed "
                                "(Debian packages chromium and chromium-driver)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_command() -> list[str]:
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A study store and an `mlflow ui` serving it on 127.0.0.1:<free port>."""
    root = tmp_path_factory.mktemp("ui")
    uri = fresh_tracking_uri(root)
    outcome = make_study(root, uri, STUDY, n_trials=6, failed_trials=1)
    report = build_report(uri, [STUDY], root / "report")
    port = _free_port()
    log = (root / "mlflow-ui.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen([*_mlflow_command(), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not come up: {(root / 'mlflow-ui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        study = report.studies[0]
        client = tracking._client(uri)
        trials = {run_id: client.get_run(run_id).info.run_name for run_id in study.trials["run_id"]}
        yield {"base": base, "uri": uri, "experiment_id": study.experiment_id, "parent": outcome.parent_run_id,
               "trials": trials,
               "shots": os.environ.get("PAINVRL_UI_SCREENSHOT_DIR") or str(root / "screenshots"),
               "profile": str(root / "chromium-profile")}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the session this test started for the server
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def _trial_names(page: str) -> set[str]:
    """The trial run names on the page: ``trial 3`` (the Optuna trial number) or, where the number is unknown,
    ``trial <Tune trial id>``."""
    return set(re.findall(rf"\btrial (?:\d+|{STUDY}_\d{{5}})\b", page))


def _selenium_available() -> bool:
    if os.environ.get("PAINVRL_UI_NO_SELENIUM"):  # exercise the Chromium-only path
        return False
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return CHROMEDRIVER.exists()


def clickable(wait: Any, text: str) -> Any:
    """The visible, clickable element whose own text is ``text`` (artifact tree entries)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    locator = (By.XPATH, f"//*[normalize-space(text())='{text}']")
    return wait.until(expected_conditions.element_to_be_clickable(locator))


def _chrome(profile: str) -> Any:
    """Headless Chromium under Selenium with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _check_with_selenium(ui: dict[str, Any], shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome(ui['profile'])
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs")
        wait.until(lambda d: f"study:{STUDY}" in d.page_source)
        # Trial runs are nested under the parent run: expand it.
        assert not _trial_names(driver.page_source), "trial runs should be nested (collapsed) under the parent"
        driver.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        wait.until(lambda d: len(_trial_names(d.page_source)) == 7)
        driver.save_screenshot(str(shots / "mlflow_ui_runs.png"))

        driver.get(f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs/{ui['parent']}/artifacts")
        wait.until(lambda d: "front.csv" in d.page_source)
        page = driver.page_source
        assert all(name in page for name in ("front.png", "trials.csv", "study.yaml", "report"))
        clickable(wait, "front.png").click()
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).some(i => i.src.startsWith('blob:') && i.complete"
            " && i.naturalWidth > 300)"))
        driver.save_screenshot(str(shots / "mlflow_ui_front_artifact.png"))

        # The study report logged to the parent run renders in the artifact viewer.
        clickable(wait, "report").click()
        clickable(wait, "report.html").click()
        frame = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src^='blob:']"))[0]
        driver.switch_to.frame(frame)
        wait.until(lambda d: f"PaInvRL study report: {STUDY}" in d.page_source and "Pareto front" in d.page_source)
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "mlflow_ui_report.png"))
    finally:
        driver.quit()


def _chromium(ui: dict[str, Any], url: str, *args: str) -> str:
    result = subprocess.run([str(CHROMIUM), *CHROME_FLAGS, f"--user-data-dir={ui['profile']}",
                             "--virtual-time-budget=20000", *args, url],
                            capture_output=True, text=True, timeout=120)
    return result.stdout


def _check_with_chromium_cli(ui: dict[str, Any], shots: Path) -> None:
    runs = f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs"
    assert f"study:{STUDY}" in _chromium(ui, runs, "--dump-dom")
    # Without a driver to click the expander, open each trial run's page: it names its parent run.
    for run_id, name in ui["trials"].items():
        page = _chromium(ui, f"{runs}/{run_id}", "--dump-dom")
        assert name in page and "Parent run" in page and f"study:{STUDY}" in page
    _chromium(ui, runs, f"--screenshot={shots / 'mlflow_ui_runs.png'}")
    artifacts = f"{ui['base']}/#/experiments/{ui['experiment_id']}/runs/{ui['parent']}/artifacts"
    assert "front.csv" in _chromium(ui, artifacts, "--dump-dom")
    _chromium(ui, artifacts, f"--screenshot={shots / 'mlflow_ui_front_artifact.png'}")


@pytest.mark.slow
@pytest.mark.skipif(not _selenium_available(), reason="needs selenium and /usr/bin/chromedriver")
def test_the_printed_url_opens_the_study_runs_with_their_objectives(ui: dict[str, Any]) -> None:
    """The page search.py prints opens on the runs table (not the GenAI overview): the parent run, every trial
    run, and the two objective columns with values, without a click."""
    from selenium.webdriver.support.ui import WebDriverWait

    from painvrl.study.driver import mlflow_ui_url

    uri = ui["uri"]
    printed = mlflow_ui_url(uri, ui["parent"], ["val.iid.recall@20", "val.ood.recall@20"])
    assert printed.startswith("http://127.0.0.1:5000/#/experiments/")
    url = ui["base"] + printed.removeprefix("http://127.0.0.1:5000")
    experiment = tracking._client(uri).get_experiment(ui["experiment_id"])
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND
    driver = _chrome(ui['profile'] + "-url")
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        wait.until(lambda d: f"study:{STUDY}" in d.page_source and len(_trial_names(d.page_source)) >= 5)
        page = driver.page_source
        assert "val.iid.recall_at_20" in page and "val.ood.recall_at_20" in page
        assert "Detect Issues" not in page
        assert re.search(r">0\.\d{2,}", page), "no objective values in the table"
        Path(ui["shots"]).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(ui["shots"]) / "mlflow_ui_study_url.png"))
    finally:
        driver.quit()


@pytest.mark.slow
def test_mlflow_ui_shows_the_study(ui: dict[str, Any]) -> None:
    shots = Path(ui["shots"])
    shots.mkdir(parents=True, exist_ok=True)
    selenium = _selenium_available()
    names = ["mlflow_ui_runs.png", "mlflow_ui_front_artifact.png"] + (["mlflow_ui_report.png"] if selenium else [])
    for name in names:
        (shots / name).unlink(missing_ok=True)
    if selenium:
        _check_with_selenium(ui, shots)
    else:
        _check_with_chromium_cli(ui, shots)
    for name in names:
        shot = shots / name
        assert shot.exists() and shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), shot
        assert shot.stat().st_size > 20_000, f"{shot} looks blank"
    shutil.rmtree(ui["profile"], ignore_errors=True)
