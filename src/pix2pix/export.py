"""``python -m src.pix2pix.export``: the shared export command (:mod:`src.common.export`).

Kept under its old name so existing commands keep working; it exports every generator family,
not only pix2pix's. See ``configs/export/export.yaml``.
"""

from __future__ import annotations

from src.common.export import (
    LoadedGenerator,
    export_generator,
    load_any_generator,
    main,
)

__all__ = ["LoadedGenerator", "export_generator", "load_any_generator", "main"]

if __name__ == "__main__":
    main()
