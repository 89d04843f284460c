"""``python -m src.serve.cartoonize input=PHOTO_OR_DIR output=DIR model=generator.pt``.

Cartoonizes a photo or a folder of photos with an exported generator, in PyTorch or ONNX Runtime
(``runtime=torch|onnx``): ``mode=faces`` writes each cartoon face as ``<stem>_face<k>.png``,
``mode=paste`` the photo with the cartoons pasted back as ``<stem>.png`` (``both`` writes both).
Photos go in batches with a progress bar; unreadable files and skipped faces are reported (one
line each, and in ``report.json``) and never stop the run. With ``identity`` (default: when dlib
is installed) the report gives each face's dlib identity distance to its cartoon (same person
below 0.6; null where no face is found in the cartoon) and the detection rate. Also the chain's
``cartoonize`` stage: the smoke chain ends by cartoonizing the shipped test photos with its
pix2pix generator.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image, ImageOps
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import (
    BadImageError,
    ImageLoadReport,
    list_images,
    load_image,
    save_image,
)
from src.common.stage import StageContext, run_stage
from src.common.visual import contact_sheet
from src.encoder.inversion import checked_degree
from src.encoder.toonify import InversionRunner, load_inversion_runner
from src.faces import make_detector
from src.faces.identity_dlib import DlibIdentity, identity_scorer
from src.serve.engine import Cartoonizer, PhotoResult, Runner, load_runner

MODES = ("faces", "paste", "both")
SHORT_KEYS = ("input", "output", "model", "runtime", "mode", "backend", "degree")
BACKENDS = ("generator", "inversion")
REPORT_FILE = "report.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
SWEEP_FILE = "degree_sweep.png"
TRUTH_FILE = "ground_truth.json"
TRUTH_GRID = "ground_truth_grid.png"
SHEET_CELL = 160


def settings_from(cfg: DictConfig) -> DictConfig:
    """``cfg.<stage>`` (``cartoonize``, or an alias such as ``toonify``) with the short
    command-line keys (``input=...``) applied on top."""
    own = cfg.get(str(cfg.get("stage") or "cartoonize")) or cfg.get("cartoonize")
    settings = OmegaConf.merge(own or {}, {})
    for key in SHORT_KEYS:
        if cfg.get(key) is not None:
            settings[key] = cfg[key]
    return settings


def collect_inputs(source: str | os.PathLike[str]) -> list[Path]:
    """The photos named by ``input``: the file itself, or the images of the folder."""
    path = Path(source)
    if path.is_dir():
        return list_images(path)
    if path.is_file():
        return [path]
    raise UserError(f"input={path} does not exist; give a photo or a folder of photos")


def output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A unique file-name stem per input: its own stem, or where two stems collide its full
    name (``a.jpg`` -> ``a_jpg``), numbered when even that is taken (``a_jpg.png`` exists)."""
    stems = Counter(p.stem for p in paths)
    names = {p: p.stem for p in paths if stems[p.stem] == 1}
    taken = set(names.values())
    for path in paths:
        if path in names:
            continue
        base = name = path.name.replace(".", "_")
        number = 2
        while name in taken:
            name, number = f"{base}-{number}", number + 1
        taken.add(name)
        names[path] = name
    return {p: names[p] for p in paths}


def batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    """``items`` in consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def existing_outputs(folder: Path, stem: str, mode: str) -> list[str]:
    """Files an earlier, interrupted run already wrote for ``stem`` (empty: do it again)."""
    faces = sorted(p.name for p in folder.glob(f"{stem}_face*.png"))
    pasted = [f"{stem}.png"] if (folder / f"{stem}.png").is_file() else []
    wanted = {"faces": [faces], "paste": [pasted], "both": [faces, pasted]}[mode]
    return faces + pasted if all(wanted) else []


def write_result(folder: Path, stem: str, result: PhotoResult, mode: str) -> list[str]:
    """Save one photo's cartoons and/or paste; return the written file names."""
    written = []
    if mode in ("faces", "both"):
        for index, cartoon in enumerate(result.cartoons):
            name = f"{stem}_face{index}.png"
            save_image(Image.fromarray(cartoon), folder / name)
            written.append(name)
    if mode in ("paste", "both") and result.pasted is not None and result.cartoons:
        save_image(Image.fromarray(result.pasted), folder / f"{stem}.png")
        written.append(f"{stem}.png")
    return written


def describe(result: PhotoResult) -> dict[str, Any]:
    """The report entry of one photo: its faces (boxes, eyes) and the skipped ones with reasons."""
    return {
        "faces": [
            {
                "box": [round(float(v), 1) for v in face.face.box],
                "landmarks": {
                    k: [round(float(v), 1) for v in p] for k, p in face.face.landmarks.items()
                },
            }
            for face in result.aligned
        ],
        "skipped": [
            {"box": [round(float(v), 1) for v in s.face.box], "reason": s.reason}
            for s in result.skipped
        ],
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
    }


def make_runner(settings: DictConfig, onnx_dir: Path) -> Runner:
    """The generator runner of ``backend``: an exported generator (``model``), or an encoder
    and the blended StyleGAN at ``degree`` (``inversion``, PyTorch only)."""
    backend = str(settings.get("backend", "generator"))
    if backend not in BACKENDS:
        raise UserError(f"backend={backend} is unknown; use one of {', '.join(BACKENDS)}")
    if backend == "inversion":
        if str(settings.get("runtime", "torch")) != "torch":
            raise UserError("backend=inversion runs in PyTorch only; set runtime=torch")
        if settings.get("threads"):
            torch.set_num_threads(int(settings.threads))
        degree = settings.get("degree", 1.0)
        first = degree[0] if isinstance(degree, ListConfig) else degree
        return load_inversion_runner(settings.get("inversion") or {}, degree=first)
    if not settings.get("model"):
        raise UserError("no generator given; set model=/path/to/generator.pt (or a .onnx graph)")
    low, high = settings.get("value_range", (-1.0, 1.0))
    return load_runner(
        settings.model,
        str(settings.get("runtime", "torch")),
        onnx_dir=onnx_dir,
        value_range=(float(low), float(high)),
        threads=settings.get("threads"),
    )


def add_identity(entry: dict[str, Any], result: PhotoResult, scorer: DlibIdentity) -> None:
    """Each face's identity distance to its cartoon, into its report ``entry``.

    Both sides are searched the same way: the face in the aligned crop and in the cartoon.
    """
    pairs = zip(entry["faces"], result.aligned, result.cartoons, strict=True)
    for record, aligned, cartoon in pairs:
        value = scorer.image_distance(aligned.image, cartoon)
        record["identity_distance"] = None if value is None else round(value, 4)


def identity_summary(photos: dict[str, Any]) -> dict[str, Any]:
    """Detection rate in the cartoons and the mean distance over the detected ones."""
    values = [
        face["identity_distance"]
        for entry in photos.values()
        for face in entry.get("faces", [])
        if "identity_distance" in face
    ]
    found = [v for v in values if v is not None]
    return {
        "faces": len(values),
        "detection_rate": len(found) / len(values) if values else None,
        "mean_distance": float(np.mean(found)) if found else None,
    }


def make_cartoonizer(
    settings: DictConfig, onnx_dir: Path, runner: Runner | None = None
) -> Cartoonizer:
    """The engine the settings describe (generator, runtime, detector, template)."""
    runner = runner or make_runner(settings, onnx_dir)
    detector_cfg = settings.get("detector") or {}
    options = OmegaConf.to_container(detector_cfg.get("options") or OmegaConf.create({}))
    detector = make_detector(str(detector_cfg.get("name", "auto")), **options)  # type: ignore[arg-type]
    white = settings.get("white_background")
    return Cartoonizer(
        runner,
        detector,
        template=settings.get("template"),
        white=None if white is None else bool(white),
        min_face=int(settings.get("min_face", 48)),
        max_faces=settings.get("max_faces"),
        feather=float(settings.get("feather", 0.12)),
    )


def cartoonize_files(
    settings: DictConfig,
    output: Path,
    resume: bool = False,
    console: Console | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Cartoonize every photo ``settings.input`` names into ``output``; return the report.
    ``runner``: an already loaded one (a degree sweep reuses it), else the settings' own."""
    console = console or Console(stderr=True)
    mode = str(settings.get("mode", "faces"))
    if mode not in MODES:
        raise UserError(f"mode={mode} is unknown; use one of {', '.join(MODES)}")
    batch_size = int(settings.get("batch_size", 8))
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be at least 1")
    paths = collect_inputs(settings.input)
    output.mkdir(parents=True, exist_ok=True)
    cartoonizer = make_cartoonizer(settings, output, runner)
    identity = identity_scorer(settings.get("identity"))
    names = output_names(paths)
    loads = ImageLoadReport()
    photos: dict[str, Any] = {}
    sheet: list[tuple[Image.Image, list[np.ndarray]]] = []
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Cartoonizing", total=len(paths))
        for batch in batched(paths, batch_size):
            todo: list[tuple[Path, np.ndarray]] = []
            for path in batch:
                kept = existing_outputs(output, names[path], mode) if resume else []
                if kept:
                    photos[str(path)] = {"outputs": kept, "resumed": True}
                    continue
                try:
                    todo.append((path, np.asarray(load_image(path))))
                except BadImageError as err:
                    loads.record_skip(err.path, err.reason, err.detail)
                    console.print(f"[yellow]skipped[/] {path}: {err.reason} ({err.detail})")
            loads.loaded += len(todo)
            results = cartoonizer.process(
                [pixels for _, pixels in todo], paste_back=mode in ("paste", "both")
            )
            for (path, pixels), result in zip(todo, results, strict=True):
                entry = describe(result)
                if identity is not None:
                    add_identity(entry, result, identity)
                entry["outputs"] = write_result(output, names[path], result, mode)
                photos[str(path)] = entry
                for skipped in result.skipped:
                    console.print(f"[yellow]face skipped[/] in {path}: {skipped.reason}")
                if not result.aligned:
                    console.print(f"[yellow]no face[/] found in {path}")
                if len(sheet) < 16:
                    sheet.append((Image.fromarray(pixels), result.cartoons))
            progress.advance(task, len(batch))
    report = {
        "model": str(settings.get("model")),
        "backend": str(settings.get("backend", "generator")),
        "runtime": str(settings.get("runtime", "torch")),
        "mode": mode,
        "template": cartoonizer.template,
        "photos": photos,
        "unreadable": [{"file": str(p), "reason": r} for p, r in loads.skipped_files],
        "summary": loads.summary(),
        "faces": sum(len(e.get("faces", [])) for e in photos.values()),
    }
    if isinstance(cartoonizer.runner, InversionRunner):
        report["inversion"] = {
            "encoder": str(settings.inversion.encoder),
            "degree": cartoonizer.runner.degree,
            "restyle_steps": cartoonizer.runner.inverter.steps,
            "project_steps": cartoonizer.runner.project_steps,
        }
    if identity is not None:
        report["identity"] = identity_summary(photos)
    atomic_write_json(output / REPORT_FILE, report)
    if settings.get("contact_sheet", True) and sheet:
        save_image(make_sheet(sheet), output / CONTACT_SHEET_FILE)
    console.print(f"{report['summary']}; {report['faces']} cartoon faces -> {output}")
    return report


def make_sheet(rows: list[tuple[Image.Image, list[np.ndarray]]]) -> Image.Image:
    """Each photo followed by its cartoon faces, one photo a row."""
    columns = 1 + max(len(cartoons) for _, cartoons in rows)
    cells: list[Image.Image] = []
    blank = Image.new("RGB", (SHEET_CELL, SHEET_CELL), (255, 255, 255))
    for photo, cartoons in rows:
        row = [photo, *(Image.fromarray(c) for c in cartoons)]
        # Scaled up or down to the cell: smoke-sized 32 px cartoons stay visible.
        cells.extend(ImageOps.contain(image, (SHEET_CELL, SHEET_CELL)) for image in row)
        cells.extend([blank] * (columns - len(row)))
    return contact_sheet(cells, columns)


def degree_folder(degree: float) -> str:
    """The sub-folder of one degree of a sweep: ``degree_0.5``."""
    return f"degree_{float(degree):g}"


def degree_sweep(
    settings: DictConfig, output: Path, degrees: list[float], resume: bool = False
) -> list[str]:
    """Cartoonize at every degree (one encoding pass per degree, the networks loaded once) into
    ``degree_<d>/`` and write ``degree_sweep.png``: each photo, then its first face per degree."""
    runner = make_runner(settings, output)
    assert isinstance(runner, InversionRunner)
    reports = []
    for degree in degrees:
        runner.degree = checked_degree(degree)
        folder = output / degree_folder(degree)
        reports.append(cartoonize_files(settings, folder, resume=resume, runner=runner))
    rows: list[tuple[Image.Image, list[np.ndarray]]] = []
    for photo, entry in reports[0]["photos"].items():
        faces = [name for name in entry.get("outputs", []) if name.endswith("_face0.png")]
        if not faces:
            continue
        cells = [np.asarray(load_image(output / degree_folder(d) / faces[0])) for d in degrees]
        rows.append((load_image(photo), cells))
    written = [f"{degree_folder(d)}/{REPORT_FILE}" for d in degrees]
    if rows:
        save_image(make_sheet(rows[:16]), output / SWEEP_FILE)
        written.append(SWEEP_FILE)
    truth = settings.get("ground_truth")
    if truth is not None and truth.get("root"):
        written += compare_on_ground_truth(runner, truth, degrees, output)
    return written


def compare_on_ground_truth(
    runner: InversionRunner, truth: DictConfig, degrees: list[float], output: Path
) -> list[str]:
    """Score the inversion at every degree on true photo -> cartoon pairs, beside the scores
    another generator left (``ground_truth.compare``, e.g. pix2pix's ground_truth.json)."""
    from src.encoder.toonify import score_on_ground_truth

    scores = score_on_ground_truth(
        runner, str(truth.root), int(truth.get("max_pairs", 16)), degrees, output / TRUTH_GRID
    )
    result: dict[str, Any] = {"root": str(truth.root), "inversion": scores}
    for name, path in (truth.get("compare") or {}).items():
        if Path(path).is_file():
            result[str(name)] = json.loads(Path(path).read_text())
    atomic_write_json(output / TRUTH_FILE, result)
    for degree, figures in scores.items():
        print(
            f"inversion at degree {degree} on {figures['pairs']} ground-truth pairs: L1 "
            f"{figures['l1']:.4f}, PSNR {figures['psnr']:.2f} dB, SSIM {figures['ssim']:.3f}"
        )
    for name in truth.get("compare") or {}:
        if name in result:
            f = result[name]
            print(f"{name}: L1 {f['l1']:.4f}, PSNR {f['psnr']:.2f} dB, SSIM {f['ssim']:.3f}")
    return [TRUTH_FILE, TRUTH_GRID]


def cartoonize_stage(ctx: StageContext) -> list[str]:
    """The stage function: cartoonize the configured photos into ``output`` (or ``out_dir``);
    with ``backend=inversion`` and a list of degrees, one folder per degree and a sweep sheet."""
    settings = settings_from(ctx.cfg)
    output = Path(settings.output) if settings.get("output") else ctx.out_dir
    degree = settings.get("degree")
    if settings.get("backend") == "inversion" and isinstance(degree, ListConfig):
        names = degree_sweep(settings, output, [float(d) for d in degree], resume=ctx.resume)
        return [os.path.relpath(output / name, ctx.out_dir) for name in names]
    cartoonize_files(settings, output, resume=ctx.resume)
    outputs = [name for name in (REPORT_FILE, CONTACT_SHEET_FILE) if (output / name).exists()]
    return [os.path.relpath(output / name, ctx.out_dir) for name in outputs]


def main() -> None:
    """Entry point of ``python -m src.serve.cartoonize``."""
    run_stage("cartoonize", cartoonize_stage)


if __name__ == "__main__":
    main()
