"""Photo in, cartoon faces out: the engine shared by ``cartoonize``, the bot and the benchmark.

A ``Cartoonizer`` detects the faces of a photo, aligns each the way the generator's training
data was aligned (``ffhq`` for pix2pix and StyleGAN-derived generators, photo2cartoon's head
crop with a white background for photo2cartoon), runs the generator on all crops of a batch of
photos at once, and optionally pastes the cartoons back. The generator runs in PyTorch or in ONNX
Runtime behind one small interface, so both give the same faces (checked in the tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from src.common.errors import UserError
from src.common.generators import load_generator
from src.common.integrity import verify_recorded_sha256
from src.faces import AlignedFace, FaceDetector, SkippedFace, align_faces, make_detector, paste
from src.faces.detect import to_rgb_array

RUNTIMES = ("torch", "onnx")
STEPS = ("detect", "align", "generate", "paste")
# Generator families whose training crops were photo2cartoon's (white background); the others
# were trained on FFHQ-style crops.
PHOTO2CARTOON_FAMILIES = frozenset({"photo2cartoon"})


class Runner(Protocol):
    """A generator behind a runtime: float images N x 3 x S x S in ``value_range`` -> same."""

    image_size: int
    value_range: tuple[float, float]
    family: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The generator's output for ``batch`` (float32, N x 3 x S x S)."""
        ...


class TorchRunner:
    """A generator module run by PyTorch on the CPU, without autograd."""

    def __init__(
        self,
        module: torch.nn.Module,
        image_size: int,
        value_range: tuple[float, float] = (-1.0, 1.0),
        family: str = "unknown",
    ) -> None:
        self.module = module.eval()
        self.image_size = int(image_size)
        self.value_range = value_range
        self.family = family

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The generator's output for ``batch``."""
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).float().numpy()


class OnnxRunner:
    """An exported ONNX graph (input ``input``, output ``output``) run by ONNX Runtime on CPU."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_size: int | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        family: str = "unknown",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise UserError(f"{path}: ONNX Runtime cannot load it ({err}); re-export it") from err
        shape = self.session.get_inputs()[0].shape
        if image_size is None:
            if not isinstance(shape[-1], int):
                raise UserError(f"{path}: the graph's input size is dynamic; set image_size")
            image_size = shape[-1]
        self.image_size = int(image_size)
        self.value_range = value_range
        self.family = family

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph's output for ``batch``."""
        (output,) = self.session.run(["output"], {"input": np.ascontiguousarray(batch)})
        return output


def load_runner(
    model: str | os.PathLike[str],
    runtime: str = "torch",
    *,
    onnx_dir: str | os.PathLike[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    threads: int | None = None,
) -> Runner:
    """A runner for ``model``: an exported ``generator.pt``, or a ``.onnx`` graph.

    With ``runtime="onnx"`` a ``generator.pt`` is exported first, to ``onnx_dir`` (default: the
    model's folder) as ``<stem>.onnx``, unless an export newer than the model is there already.
    ``value_range`` is only used for a bare ``.onnx`` graph (a ``generator.pt`` records its own).
    """
    if runtime not in RUNTIMES:
        raise UserError(f"runtime={runtime} is unknown; use one of {', '.join(RUNTIMES)}")
    path = Path(model)
    if not path.is_file():
        raise UserError(f"model={path} does not exist; point it at a generator.pt or .onnx file")
    if path.suffix == ".onnx":
        verify_recorded_sha256(path)
        if runtime != "onnx":
            raise UserError(f"model={path} is an ONNX graph; run it with runtime=onnx")
        return OnnxRunner(path, value_range=value_range, threads=threads)
    if threads:
        torch.set_num_threads(int(threads))
    bundle = load_generator(path)
    if runtime == "torch":
        return TorchRunner(bundle.module, bundle.image_size, bundle.value_range, bundle.family)
    from src.common.export import export_onnx

    target = Path(onnx_dir or path.parent) / f"{path.stem}.onnx"
    if not target.is_file() or target.stat().st_mtime < path.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(1, 3, bundle.image_size, bundle.image_size)
        export_onnx(bundle.module, example, target)
    return OnnxRunner(target, bundle.image_size, bundle.value_range, bundle.family, threads=threads)


def to_model_input(crops: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """uint8 N x S x S x 3 crops -> float32 N x 3 x S x S in ``value_range``."""
    low, high = value_range
    unit = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return (low + unit * (high - low)).astype(np.float32)


def from_model_output(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """float N x 3 x S x S in ``value_range`` -> uint8 N x S x S x 3 (clipped, rounded)."""
    low, high = value_range
    unit = (images.transpose(0, 2, 3, 1) - low) / (high - low)
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


@dataclass
class PhotoResult:
    """What became of one photo: the cartoon faces, their crops, skipped faces, the paste."""

    cartoons: list[np.ndarray] = field(default_factory=list)
    aligned: list[AlignedFace] = field(default_factory=list)
    skipped: list[SkippedFace] = field(default_factory=list)
    pasted: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))


class Cartoonizer:
    """Detect, align, generate and (optionally) paste back, for batches of photos."""

    def __init__(
        self,
        runner: Runner,
        detector: FaceDetector | None = None,
        *,
        template: str | None = None,
        white: bool | None = None,
        min_face: int = 48,
        max_faces: int | None = 8,
        max_batch: int = 16,
        feather: float = 0.12,
    ) -> None:
        photo2cartoon = runner.family in PHOTO2CARTOON_FAMILIES
        self.runner = runner
        self.detector = detector if detector is not None else make_detector()
        self.template = template or ("photo2cartoon" if photo2cartoon else "ffhq")
        self.white = photo2cartoon if white is None else bool(white)
        self.min_face = int(min_face)
        self.max_faces = max_faces
        self.max_batch = int(max_batch)
        self.feather = float(feather)

    def __call__(self, photo: np.ndarray, *, paste_back: bool = False) -> PhotoResult:
        """Cartoonize one RGB photo (uint8 H x W x 3)."""
        return self.process([photo], paste_back=paste_back)[0]

    def process(
        self, photos: Sequence[np.ndarray], *, paste_back: bool = False
    ) -> list[PhotoResult]:
        """Cartoonize several photos, running the generator on all their faces together."""
        pixels = [to_rgb_array(photo) for photo in photos]
        results = [self._crop(photo) for photo in pixels]
        crops = [face.image for result in results for face in result.aligned]
        start = time.perf_counter()
        cartoons = self.generate(np.stack(crops)) if crops else np.zeros((0, 1, 1, 3), np.uint8)
        per_face = (time.perf_counter() - start) / max(1, len(crops))
        index = 0
        for photo, result in zip(pixels, results, strict=True):
            count = len(result.aligned)
            result.cartoons = list(cartoons[index : index + count])
            result.seconds["generate"] = per_face * count
            index += count
            if paste_back:
                start = time.perf_counter()
                result.pasted = self.paste(photo, result)
                result.seconds["paste"] = time.perf_counter() - start
        return results

    def _crop(self, photo: np.ndarray) -> PhotoResult:
        result = PhotoResult()
        start = time.perf_counter()
        faces = self.detector.detect(photo)
        result.seconds["detect"] = time.perf_counter() - start
        start = time.perf_counter()
        result.aligned, result.skipped = align_faces(
            photo,
            faces,
            self.runner.image_size,
            template=self.template,  # type: ignore[arg-type]
            min_face=self.min_face,
            max_faces=self.max_faces,
            white=self.white,
        )
        result.seconds["align"] = time.perf_counter() - start
        return result

    def generate_float(self, crops: np.ndarray) -> np.ndarray:
        """The generator's raw float output for uint8 crops, in chunks of ``max_batch``."""
        batch = to_model_input(crops, self.runner.value_range)
        chunks = [
            self.runner.run(batch[i : i + self.max_batch])
            for i in range(0, len(batch), self.max_batch)
        ]
        return np.concatenate(chunks)

    def generate(self, crops: np.ndarray) -> np.ndarray:
        """Cartoon faces (uint8 N x S x S x 3) for uint8 crops."""
        return from_model_output(self.generate_float(crops), self.runner.value_range)

    def paste(self, photo: np.ndarray, result: PhotoResult) -> np.ndarray:
        """``photo`` with every cartoon of ``result`` pasted back over its face."""
        out = photo
        for aligned, cartoon in zip(result.aligned, result.cartoons, strict=True):
            out, _ = paste(out, cartoon, aligned, self.feather)
        return out
