from src.common.stage import run_stage
from tests.stages.fake import produce

if __name__ == "__main__":
    run_stage("fake_a", produce)
