"""The Gradio page: its work function (limits, files) and a round trip in headless Chromium.

The browser test runs ``python -m src.serve.web`` as a user would and uploads the two-face photo.
It skips where no Chromium is installed, except in CI (``CI`` set), which installs Debian's
``chromium`` (see .ci/run) and must run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from src.common.errors import UserError
from src.serve.web import WebDemo, WebSettings, settings_from
from tests.cleaner.test_label_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import REPO_ROOT
from tests.serve.conftest import PHOTOS


def demo_for(generator: Path, tmp_path: Path, **limits: int) -> WebDemo:
    settings = WebSettings(models={"identity": str(generator)}, **limits)
    return WebDemo(settings, out_dir=tmp_path)


def test_cartoonize_gives_faces_paste_and_files(identity_generator: Path, tmp_path: Path) -> None:
    demo = demo_for(identity_generator, tmp_path)
    faces, pasted, files, status = demo.cartoonize(PHOTOS / "two_faces.jpg", "identity")
    photo = np.asarray(Image.open(PHOTOS / "two_faces.jpg").convert("RGB"))
    assert len(faces) == 2 and all(face.shape == (256, 256, 3) for face in faces)
    assert pasted is not None and pasted.shape == photo.shape
    # The identity generator pastes the photo back onto itself.
    assert np.abs(pasted.astype(int) - photo.astype(int)).mean() < 2.0
    assert [Path(f).name for f in files] == [
        "cartoon_face0.png",
        "cartoon_face1.png",
        "cartoon_pasted.png",
    ]
    np.testing.assert_array_equal(np.asarray(Image.open(files[1])), faces[1])
    assert status.startswith("2 faces in ") and status.endswith("with identity")


def test_limits_and_bad_input(identity_generator: Path, tmp_path: Path) -> None:
    demo = demo_for(identity_generator, tmp_path, max_pixels=100_000, max_faces=1)
    with pytest.raises(UserError, match=r"0\.3 megapixels; the limit is 0\.1"):
        demo.cartoonize(PHOTOS / "two_faces.jpg", "identity")
    demo = demo_for(identity_generator, tmp_path, max_faces=1)
    faces, _, _, status = demo.cartoonize(PHOTOS / "two_faces.jpg", "identity")
    assert len(faces) == 1 and "skipped: more than 1 faces" in status
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    assert demo.cartoonize(blank, "identity")[3].startswith("No face found")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(UserError, match="not an image"):
        demo.cartoonize(tmp_path / "text.png", "identity")
    with pytest.raises(UserError, match="give a photo first"):
        demo.cartoonize(None, "identity")
    with pytest.raises(UserError, match="unknown model 'nope'"):
        demo.cartoonize(PHOTOS / "astronaut.jpg", "nope")


def test_settings_check_the_generator_files(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"web": {"models": {"x": str(tmp_path / "missing.pt")}}})
    with pytest.raises(UserError, match=r"web\.models\.x=.* does not exist"):
        settings_from(cfg)
    with pytest.raises(UserError, match="no generators configured"):
        settings_from(OmegaConf.create({"web": {"models": {}}}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(generator: Path, root: Path) -> tuple[subprocess.Popen[str], str]:
    """The web demo on a free port, and the URL it prints."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.serve.web",
            f"web.models.pix2pix={generator}",
            f"web.port={free_port()}",
            f"paths.root_dir={root}",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "http://" in line:
            return process, line[line.index("http://") :].split()[0]
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError("the web demo did not start:\n" + "".join(lines))


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason=f"no Chromium at {CHROMIUM}"
)
def test_photo_in_cartoons_out_in_chromium(identity_generator: Path, tmp_path: Path) -> None:
    from playwright import sync_api as playwright_api

    process, url = start_server(identity_generator, tmp_path)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.locator("#photo input[type=file]").set_input_files(PHOTOS / "two_faces.jpg")
            playwright_api.expect(page.locator("#photo img")).to_be_visible(timeout=30_000)
            page.locator("#run").click()
            status = page.locator("#status")
            playwright_api.expect(status).to_contain_text("2 faces in", timeout=120_000)
            playwright_api.expect(page.locator("#faces img")).to_have_count(2)
            playwright_api.expect(page.locator("#pasted img")).to_be_visible()
            playwright_api.expect(page.locator("#files a")).to_have_count(3)
            page.screenshot(path=str(tmp_path / "web_demo.png"), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert (tmp_path / "web_demo.png").stat().st_size > 10_000
