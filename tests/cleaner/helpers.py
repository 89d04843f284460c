"""Small pairs folders for the cleaner tests: toy faces in the pairs layout dataset_gen writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from src.common.toyfaces.writer import write_toyfaces


def toy_pairs(root: Path, count: int, size: int = 32, bad_fraction: float = 0.5) -> Path:
    """Toy faces with labels: ``root/paired`` with A/, B/ and labels.csv (id,label,...)."""
    write_toyfaces(
        root,
        seed=0,
        size=size,
        train_count=0,
        test_count=0,
        paired_count=count,
        bad_fraction=bad_fraction,
        contact_sheet_pairs=0,
        progress=False,
    )
    return root / "paired"


def dataset_gen_folder(paired: Path, out: Path, seeds: range) -> Path:
    """A dataset_gen-style folder: A/{seed:06d}.png, B/..., manifest.jsonl rows seed, a, b."""
    for side in ("A", "B"):
        (out / side).mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        name = f"{seed:06d}.png"
        for side in ("A", "B"):
            shutil.copyfile(paired / side / name, out / side / name)
        rows.append({"seed": seed, "a": f"A/{name}", "b": f"B/{name}", "psi": 0.7})
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (out / "manifest.jsonl").write_text(text, encoding="utf-8")
    return out
