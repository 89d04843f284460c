"""``python -m src.stylegan3_photo``: ``python -m src.stylegan3 --config-name=stylegan3_photo``."""

from src.common.stage import run_stage
from src.stylegan3.__main__ import train

if __name__ == "__main__":
    run_stage("stylegan3_photo", train)
