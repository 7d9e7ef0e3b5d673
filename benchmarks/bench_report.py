#!/usr/bin/env python3
"""What the report costs: a default ``gradcheck run`` (the catalogue sweep and
1,000 random graphs), in a fresh folder, then

* the share of the run's wall time spent building the report (``gradcheck
  run`` prints both: "N checks ... in Xs" and "report (built in Ys)");
* report.html's size, and the time headless Chromium takes to load it
  (navigation start to the load event, from the page's own performance timing;
  skipped without Chromium and chromedriver);
* where the build's time goes, by cProfile, rebuilding the same folder.

    .venv/bin/python benchmarks/bench_report.py              # writes benchmarks/results_report.md
    .venv/bin/python benchmarks/bench_report.py --examples 200

Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_seconds(page: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        return None
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = chromium
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        times = []
        for _ in range(3):
            driver.get(page.as_uri())
            times.append(driver.execute_script(
                "var t = performance.timing; return (t.loadEventEnd - t.navigationStart) / 1000;"))
        return min(times)
    finally:
        driver.quit()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=None, help="random graphs (default: the run's default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_report.md"))
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-report-"))
    cmd = [sys.executable, "-m", "gradcheck.cli", "run", "--out", str(folder)]
    if args.examples is not None:
        cmd += ["--examples", str(args.examples)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout
    run_s = float(re.search(r"graphs in ([\d.]+)s", out).group(1))
    report_s = float(re.search(r"report \(built in ([\d.]+)s\)", out).group(1))
    graphs = re.search(r"(\d+) checks on (\d+) graphs", out)
    (run_dir,) = [p for p in folder.iterdir() if (p / "records.jsonl").is_file()]
    page = run_dir / "report.html"
    size = page.stat().st_size
    load = _load_seconds(page)
    profile = cProfile.Profile()
    from gradcheck.report import build_report

    profile.enable()
    build_report(run_dir)
    profile.disable()
    stats = io.StringIO()
    pstats.Stats(profile, stream=stats).sort_stats("cumtime").print_stats(r"gradcheck/report", 12)
    lines = [
        "# The report's cost",
        "",
        f"`{' '.join(['gradcheck', *cmd[3:]])}` (exit {proc.returncode}): {graphs.group(1)} checks on "
        f"{graphs.group(2)} graphs; the command's wall time {wall:.1f} s with start-up.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| run (checks and report) | {run_s:.2f} s |",
        f"| report built | {report_s:.2f} s ({100 * report_s / run_s:.1f}% of the run) |",
        f"| report.html | {size / 1e6:.2f} MB |",
        f"| load in headless Chromium | {'%.2f s' % load if load is not None else 'no Chromium here'} |",
        "",
        "Rebuilding the same folder under cProfile (`.venv/bin/python -m cProfile -s cumtime -m gradcheck.cli "
        "report DIR`):",
        "",
        "```",
        *[line for line in stats.getvalue().splitlines() if line.strip()][:24],
        "```",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
