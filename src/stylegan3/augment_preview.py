"""``python -m src.stylegan3.augment_preview out=augment.png p=0.5``: a picture of ADA.

One row per op (that op alone at p = 1), then rows of the whole preset at ``p``: each row an
original image followed by its augmentations. Images come from ``data=FOLDER`` or, without
it, from the built-in toy faces. Keys: out (required), p (0.5), preset (bgc), data, size (64),
repeats (7), seed (0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from src.common.errors import UserError
from src.common.images import iter_images, list_images, save_image
from src.common.stage import fail
from src.common.visual import contact_sheet
from src.stylegan3.augment import PRESETS, AugmentPipe, augment_grid

USAGE = "usage: python -m src.stylegan3.augment_preview out=PNG [p=0.5 preset=bgc data=FOLDER]"
DEFAULTS = {
    "out": "",
    "p": "0.5",
    "preset": "bgc",
    "data": "",
    "size": "64",
    "repeats": "7",
    "seed": "0",
}
PRESET_ROWS = 3


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments over :data:`DEFAULTS`; ``out`` is required."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise UserError(f"unexpected argument {arg!r}; {USAGE}")
        args[key] = value
    if not args["out"]:
        raise UserError(f"missing out=; {USAGE}")
    return args


def sample_images(data: str, count: int, size: int) -> torch.Tensor:
    """``count`` NCHW images in [-1, 1] at ``size``: from ``data`` or toy faces."""
    if data:
        paths = list_images(data, recursive=True)[:count]
        pictures = [im.convert("RGB").resize((size, size)) for _, im in iter_images(paths)]
        if not pictures:
            raise UserError(f"data: {data} holds no usable image")
        arrays = [np.asarray(picture) for picture in pictures]
    else:
        from src.common.toyfaces.render import make_face

        arrays = [make_face(0, "augment_preview", i, size).photo for i in range(count)]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1


def preview(args: dict[str, str]) -> Path:
    """Draw the picture described in the module doc and save it to ``args['out']``."""
    try:
        p, size, repeats = float(args["p"]), int(args["size"]), int(args["repeats"])
    except ValueError:
        raise UserError(f"p, size and repeats must be numbers; {USAGE}") from None
    if not 0 <= p <= 1:
        raise UserError("p: must be within [0, 1]")
    torch.manual_seed(int(args["seed"]))
    pipe = AugmentPipe(args["preset"])
    images = sample_images(args["data"], PRESET_ROWS, size)
    rows, captions = [], []
    for op in PRESETS[args["preset"]]:
        single = AugmentPipe("none", **{op: 1.0})
        single.p.fill_(1.0)
        rows.append(augment_grid(images[:1], single, repeats))
        captions.append(f"{op} (p = 1)")
    pipe.p.fill_(p)
    for image in images:
        rows.append(augment_grid(image.unsqueeze(0), pipe, repeats))
        captions.append(f"{args['preset']} at p = {p:g}")
    sheet = contact_sheet(rows, columns=1, captions=captions)
    return save_image(sheet, args["out"])


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry: draw, print the written path, or print one error line and exit 2."""
    try:
        written = preview(parse_args(sys.argv[1:] if argv is None else argv))
    except UserError as err:
        fail(str(err))
    else:
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
