"""The labelling page in headless Chromium (Playwright): keys g, b, s, u write the labels file.

Runs ``python -m src.cleaner.label`` as a user would. Skips where no Chromium is installed,
except in CI (``CI`` set), which installs Debian's ``chromium`` (see .ci/run) and must run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.cleaner.labels import read_label_events
from tests.cleaner.helpers import toy_pairs
from tests.conftest import REPO_ROOT

CHROMIUM = Path(os.environ.get("TOONFORGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"), reason=f"no Chromium at {CHROMIUM}"
    ),
]


def start_server(pairs: Path, labels: Path) -> tuple[subprocess.Popen[str], str]:
    """The labelling CLI on a free port, and the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "src.cleaner.label", f"pairs={pairs}", f"labels={labels}", "port=0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if "http://" in line:
            return process, line[line.index("http://") :].split()[0]
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"the labelling server did not start: {process.stdout.read()}")


def test_keys_in_browser_write_labels(tmp_path: Path) -> None:
    from playwright import sync_api as playwright_api

    pairs = toy_pairs(tmp_path / "toy", count=4)
    labels = tmp_path / "labels.csv"
    process, url = start_server(pairs, labels)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(url)
            pair_id = page.locator("#pair-id")
            playwright_api.expect(pair_id).to_have_text("000000")
            for key, next_id in (("g", "000001"), ("b", "000002"), ("u", "000001")):
                page.keyboard.press(key)
                playwright_api.expect(pair_id).to_have_text(next_id)
            page.keyboard.press("s")
            playwright_api.expect(pair_id).to_have_text("000002")
            page.click("#good")
            playwright_api.expect(pair_id).to_have_text("000003")
            playwright_api.expect(page.locator("#count-good")).to_have_text("2")
            playwright_api.expect(page.locator("#img-B")).to_have_js_property("complete", True)
            page.screenshot(path=str(tmp_path / "label_page.png"))
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    events = [(e.pair_id, e.label) for e in read_label_events(labels)]
    assert events == [
        ("000000", "good"),
        ("000001", "bad"),
        ("000001", "undo"),
        ("000001", "skip"),
        ("000002", "good"),
    ]
    assert (tmp_path / "label_page.png").stat().st_size > 0
