"""``python -m src.cleaner_filter``: the same as ``python -m src.cleaner.filter``."""

from src.cleaner.filter import run_filter
from src.common.stage import run_stage

if __name__ == "__main__":
    run_stage("cleaner_filter", run_filter)
