"""The report in a real browser: the distribution's headless Chromium, driven by
Selenium through the distribution's chromedriver (nothing downloaded at run
time).  Skips, saying why, where either is missing; ``make test`` installs
them where it can.  Screenshots go to the test's folder, and to
$GRADCHECK_SCREENSHOTS when it names one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck.report import findings, read_records

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")

pytestmark = [pytest.mark.xdist_group("browser")]


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    if not CHROMIUM or not DRIVER:
        pytest.skip("no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _browser()
    yield driver
    driver.quit()


def _run(tmp_path, *args) -> Path:
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "gradcheck.cli", "run", "--out", str(out), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    (run,) = list(out.iterdir())
    return run


def _shoot(driver, path: Path):
    driver.save_screenshot(str(path))
    if os.environ.get("GRADCHECK_SCREENSHOTS"):
        target = Path(os.environ["GRADCHECK_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


def _console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_a_failing_run_reads_fail_with_one_card_per_distinct_failure_and_filters_by_status(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    buggy = f"{ROOT}/tests/user_layers/buggy.py:candidate"
    run = _run(tmp_path, "--candidate", buggy, "--optimizer", buggy, "--ops", "mul,relu", "--examples", "16")
    expected = findings(read_records(run))
    assert len(expected) >= 2 and {"sgd"} <= {f.op for f in expected}  # a gradient bug and an optimizer bug
    browser.get((run / "report.html").as_uri())
    assert not _console_errors(browser)
    banner = browser.find_element(By.ID, "verdict")
    assert banner.find_element(By.CLASS_NAME, "word").text == "FAIL"
    assert "distinct failure" in banner.text and "gradcheck run --out" in banner.text
    cards = browser.find_elements(By.CSS_SELECTOR, "#findings article.card")
    assert len(cards) == len(expected)
    assert all(card.find_elements(By.CSS_SELECTOR, "button.copy") for card in cards)
    assert any(card.find_elements(By.CSS_SELECTOR, "svg.graph") for card in cards)  # the graph drawn inline
    _shoot(browser, tmp_path / "report-fail.png")

    table = browser.find_element(By.ID, "summary-table")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    passing = [r for r in rows if r.get_attribute("data-status") == "pass"]
    assert passing and all(r.is_displayed() for r in passing)
    form = browser.find_element(By.CSS_SELECTOR, "form.filters[data-table='summary-table']")
    Select(form.find_element(By.CSS_SELECTOR, "select[data-key='status']")).select_by_value("fail")
    assert not any(r.is_displayed() for r in passing)
    shown = [r for r in rows if r.is_displayed()]
    assert shown and all(r.get_attribute("data-status") == "fail" for r in shown)
    Select(form.find_element(By.CSS_SELECTOR, "select[data-key='status']")).select_by_value("")
    form.find_element(By.CSS_SELECTOR, "input[data-hide-pass]").click()
    assert not any(r.is_displayed() for r in passing) and any(r.is_displayed() for r in rows)
    first = table.find_element(By.CSS_SELECTOR, "thead th:nth-child(2)")
    first.click()
    assert first.get_attribute("data-dir") == "asc"
    assert not _console_errors(browser)


def test_a_passing_run_reads_pass(browser, tmp_path):
    from selenium.webdriver.common.by import By

    run = _run(tmp_path, "--ops", "tanh,linear", "--examples", "8", "--no-torch")
    browser.get((run / "report.html").as_uri())
    assert not _console_errors(browser)
    assert browser.find_element(By.CSS_SELECTOR, "#verdict .word").text == "PASS"
    assert not browser.find_elements(By.CSS_SELECTOR, "#findings article.card")
    assert "No check failed" in browser.find_element(By.ID, "findings").text
    _shoot(browser, tmp_path / "report-pass.png")
