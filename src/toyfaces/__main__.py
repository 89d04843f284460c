"""``python -m src.toyfaces``: the same as ``python -m src.common.toyfaces``."""

from src.common.stage import run_stage
from src.common.toyfaces.__main__ import generate

if __name__ == "__main__":
    run_stage("toyfaces", generate)
