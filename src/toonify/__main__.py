"""``python -m src.toonify``: ``python -m src.serve.cartoonize --config-name=toonify``."""

from src.common.stage import run_stage
from src.serve.cartoonize import cartoonize_stage

if __name__ == "__main__":
    run_stage("toonify", cartoonize_stage)
