"""``python -m src.cyclegan.translate ckpt=... input=DIR direction=AtoB output=DIR``: translate a
folder of images with a CycleGAN generator. See ``configs/cyclegan/translate.yaml``.

``ckpt`` may be the stage's folder (its ``generator_<direction>.pt`` is used), an exported
generator file, a Lightning checkpoint of the stage (both directions inside), or a reference
generator file (``latest_net_G_A.pth``: A -> B, ``latest_net_G_B.pth``: B -> A) built from the
``generator`` options. Images already translated are skipped, so a rerun continues.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from rich.progress import track
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.generators import FORMAT, load_generator
from src.common.images import ImageLoadReport, iter_images, list_images, save_image
from src.common.stage import CONFIG_DIR, fail

DIRECTIONS = {"AtoB": "generator_ab", "BtoA": "generator_ba"}
DEFAULT_SIZE = 256


def _lightning_generator(payload: dict[str, Any], direction: str, source: Path) -> nn.Module:
    from src.cyclegan.networks import build_generator

    config = payload.get("hyper_parameters", {}).get("generator")
    if config is None:
        raise UserError(f"ckpt: {source} is a Lightning checkpoint but not of the cyclegan stage")
    prefix = DIRECTIONS[direction] + "."
    state = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    generator = build_generator(dict(config))
    load_state_dict_checked(generator, state, source)
    return generator


def load_translator(
    ckpt: str | os.PathLike[str], direction: str, reference_config: dict[str, Any]
) -> tuple[nn.Module, int | None]:
    """The generator for ``direction`` from any of the ``ckpt`` kinds above, and the image size
    it was trained at (None when the file does not say)."""
    from src.cyclegan.__main__ import DIRECTION_FILES
    from src.cyclegan.interop import load_reference_generator
    from src.cyclegan.networks import build_generator

    if direction not in DIRECTIONS:
        raise UserError(f"direction: unknown '{direction}'; use AtoB or BtoA")
    source = Path(ckpt)
    if source.is_dir():
        source = source / DIRECTION_FILES[direction]
    payload = load_checkpoint(source)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        bundle = load_generator(source)
        made_for = bundle.meta.get("direction")
        if made_for is not None and made_for != direction:
            raise UserError(
                f"ckpt: {source} translates {made_for}, not {direction}; use the stage's "
                f"{DIRECTION_FILES[direction]} or direction={made_for}"
            )
        return bundle.module, bundle.image_size
    if isinstance(payload, dict) and "state_dict" in payload:
        return _lightning_generator(payload, direction, source), None
    generator = build_generator(reference_config)
    return load_reference_generator(generator, source), None


def translate_folder(
    generator: nn.Module,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    size: int,
    keep_size: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> ImageLoadReport:
    """Translate every image of ``input_dir`` into ``output_dir/<name>.png`` (skipping those
    already there); each image is resized to ``size`` x ``size`` for the generator and, with
    ``keep_size``, the result back to the image's own size. Bad files are skipped and counted."""
    paths = list_images(input_dir)
    if not paths:
        raise UserError(f"input: {input_dir} holds no image; fix the path")
    output = Path(output_dir)
    todo = [p for p in paths if not (output / f"{p.stem}.png").is_file()]
    generator = generator.to(device).eval()
    report = ImageLoadReport()
    pictures = iter_images(todo, report)
    for path, picture in track(
        pictures, total=len(todo), description="translating", disable=not progress
    ):
        pixels = picture.resize((size, size), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(pixels).copy())
        images = tensor.permute(2, 0, 1).unsqueeze(0).float().div(127.5).sub(1).to(device)
        with torch.no_grad():
            result = generator(images)[0]
        data = (result.permute(1, 2, 0) * 127.5 + 127.5).round().clamp(0, 255).byte().cpu()
        translated = Image.fromarray(data.numpy())
        if keep_size and translated.size != picture.size:
            translated = translated.resize(picture.size, Image.Resampling.BICUBIC)
        save_image(translated, output / f"{path.stem}.png")
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "cyclegan"), config_name="translate")
def main(cfg: DictConfig) -> None:
    """Translate the folder and print one line saying what was written."""
    try:
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        reference = OmegaConf.to_container(cfg.generator, resolve=True)
        assert isinstance(reference, dict)
        generator, trained_size = load_translator(cfg.ckpt, str(cfg.direction), reference)
        size = int(cfg.size or trained_size or DEFAULT_SIZE)
        report = translate_folder(
            generator,
            cfg.input,
            cfg.output,
            size=size,
            keep_size=bool(cfg.keep_size),
            device=device,
        )
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    print(f"{cfg.direction}: {report.summary()} -> {cfg.output}")


if __name__ == "__main__":
    main()
