"""``python -m src.faces.prepare input=DIR output=DIR``: a folder of pictures -> aligned crops.

Turns a user's own photos or cartoon pictures into training data: every readable image is
searched for faces (``detector``), faces below ``min_face`` or beyond ``max_faces`` are skipped
with the reason, the rest are aligned to ``template`` (FFHQ's crop or photo2cartoon's white
head crop) and written as ``<relative path>_face<k>.png`` (folders joined with ``__``, so two
pictures never write one name). ``report.json`` counts what was written and skipped and why;
one line says the same. Files are written atomically, so an interrupted run can simply rerun.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import ImageLoadReport, iter_images, list_images, save_image
from src.common.stage import CONFIG_DIR, fail
from src.faces.align import TEMPLATES
from src.faces.crops import crop_faces
from src.faces.detect import FaceDetector, make_detector

REPORT_FILE = "report.json"


@dataclass
class PrepareReport:
    """What a preparation run wrote and skipped."""

    images: int = 0
    faces: int = 0
    without_face: list[str] = field(default_factory=list)
    skipped_faces: Counter[str] = field(default_factory=Counter)
    loading: ImageLoadReport = field(default_factory=ImageLoadReport)

    def line(self) -> str:
        """One line: crops written, pictures without a face, skipped faces and files."""
        skipped = ", ".join(f"{reason} {n}" for reason, n in self.skipped_faces.items())
        return (
            f"{self.faces} face crops from {self.images} pictures; "
            f"{len(self.without_face)} without a face; skipped faces: {skipped or 'none'}; "
            f"{self.loading.summary()}"
        )

    def as_json(self) -> dict:
        return {
            "images": self.images,
            "faces": self.faces,
            "without_face": self.without_face,
            "skipped_faces": dict(self.skipped_faces),
            "unreadable": {str(p): reason for p, reason in self.loading.skipped_files},
        }


def skip_kind(reason: str) -> str:
    """A skipped face's reason without its numbers, to count alike skips together."""
    if "below the minimum" in reason:
        return "too small (min_face)"
    if reason.startswith("more than"):
        return "beyond max_faces"
    return reason


def crop_name(path: Path, root: Path, index: int) -> str:
    """``a__b_jpg_face0.png`` for ``root/a/b.jpg``: unique per picture, one folder level."""
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    stem = "__".join(relative.with_suffix("").parts)
    return f"{stem}_{path.suffix.lstrip('.').lower()}_face{index}.png"


def prepare_folder(
    source: Path,
    output: Path,
    detector: FaceDetector,
    *,
    template: str = "ffhq",
    size: int = 256,
    min_face: int = 48,
    max_faces: int | None = 1,
    white: bool = False,
) -> PrepareReport:
    """Write the aligned crops of every picture under ``source`` to ``output``; count the rest."""
    if template not in TEMPLATES:
        raise UserError(f"template={template}: use one of {', '.join(TEMPLATES)}")
    if not source.exists():
        raise UserError(f"input: {source} does not exist; give a folder of pictures or an image")
    root = source if source.is_dir() else source.parent
    paths = list_images(source, recursive=True) if source.is_dir() else [source]
    if not paths:
        raise UserError(f"input: no images in {source}")
    output.mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    for path, image in iter_images(paths, report.loading):
        report.images += 1
        crops, skipped = crop_faces(
            image,
            detector,
            size,
            template=template,  # type: ignore[arg-type]
            min_face=min_face,
            max_faces=max_faces,
            white=white,
        )
        report.skipped_faces.update(skip_kind(s.reason) for s in skipped)
        if not crops and not skipped:
            report.without_face.append(str(path))
        for index, crop in enumerate(crops):
            save_image(Image.fromarray(crop.image), output / crop_name(path, root, index))
            report.faces += 1
    atomic_write_json(output / REPORT_FILE, report.as_json())
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "faces"), config_name="prepare")
def main(cfg: DictConfig) -> None:
    """Prepare the crops and print one line saying what was written and skipped."""
    try:
        options = OmegaConf.to_container(cfg.detector.options or OmegaConf.create({}))
        detector = make_detector(str(cfg.detector.name), **options)  # type: ignore[arg-type]
        template = str(cfg.template)
        white = (
            template == "photo2cartoon" if cfg.white_background is None else cfg.white_background
        )
        report = prepare_folder(
            Path(cfg.input),
            Path(cfg.output),
            detector,
            template=template,
            size=int(cfg.size),
            min_face=int(cfg.min_face),
            max_faces=None if cfg.max_faces is None else int(cfg.max_faces),
            white=bool(white),
        )
    except UserError as err:
        fail(str(err))
    except MissingMandatoryValue as err:
        fail(f"{err.full_key} is not set: add {err.full_key}=... to the command")
    print(f"{report.line()} -> {cfg.output}")


if __name__ == "__main__":
    main()
