"""``python -m src.common.toyfaces``: write a toy-face dataset (the chain's ``toyfaces`` stage).

Writes trainA/ trainB/ testA/ testB/ (unpaired), paired/A paired/B with labels.csv,
landmarks.json and contact_sheet.png under ``out_dir`` (the sheet also goes to TensorBoard).
See ``configs/toyfaces/default.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from src.common import tags
from src.common.stage import StageContext, run_stage
from src.common.toyfaces.writer import write_toyfaces
from src.common.visual import write_tensorboard_picture


def generate(ctx: StageContext) -> list[str]:
    """The stage function: render the configured toy-face sets into ``ctx.out_dir``."""
    p = ctx.params
    outputs = write_toyfaces(
        ctx.out_dir,
        seed=int(ctx.cfg.seed),
        size=int(p.size),
        train_count=int(p.train_count),
        test_count=int(p.test_count),
        paired_count=int(p.paired_count),
        bad_fraction=float(p.bad_fraction),
        contact_sheet_pairs=int(p.contact_sheet_pairs),
        workers=int(p.workers),
        resume=ctx.resume,
    )
    sheet = ctx.out_dir / "contact_sheet.png"
    if sheet.exists():
        with Image.open(sheet) as picture:
            log_dir = Path(ctx.cfg.paths.log_dir) / ctx.stage
            write_tensorboard_picture(log_dir, tags.samples("contact_sheet"), picture)
    return outputs


if __name__ == "__main__":
    run_stage("toyfaces", generate)
