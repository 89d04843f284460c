"""FID and KID of generated images against a folder of real ones, through torchmetrics.

Features come from a pluggable extractor (:func:`build_extractor`):

- the standard FID Inception-v3 (TensorFlow's ``2015-12-05`` graph, the weights pytorch-fid
  and torch-fidelity publish as a plain PyTorch state dict, ``pt_inception-2015-12-05-*.pth``)
  from a path the user gives: uint8 images resized to 299x299 (bilinear), 2048-d pool features.
  Numbers are comparable with published FIDs (up to the resize, which the TF graph does its way);
- without weights, a stand-in: a fixed, seeded random conv net. Its numbers only rank models
  against each other on the same data; every result it produces says so in its ``extractor``.

Nothing is ever downloaded. Every image is passed through the extractor once and its features
are handed to torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` (whose
``feature`` module is then the identity on features), so FID and KID share one extraction and
the real set's features can be cached: ``<cache_dir>/real-<key>.pt``, keyed by the folder's
file list (names, sizes, mtimes), the preprocessing and the extractor's id; written atomically.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torchvision.models.inception import (
    BasicConv2d,
    Inception3,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from src.common.errors import UserError
from src.common.fileio import atomic_path, sha256_file
from src.common.images import ImageLoadReport, iter_images, list_images
from src.common.weights import where_to_get

METRICS = ("fid", "kid")
STANDIN_LABEL = "stand-in, for relative comparisons only"
INCEPTION_LABEL = "FID Inception-v3 (2015-12-05)"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "toonforge" / "metrics"
# Bumped whenever the real-feature cache's contents would change for the same inputs.
CACHE_VERSION = 1

FakeImages = Callable[[int], Tensor] | Iterable[Tensor]


class FeatureExtractor(nn.Module):
    """uint8 NCHW RGB images -> [N, num_features] float features.

    ``extractor_id`` names the exact network and weights (it keys the cache); ``label`` is what
    results say about the numbers' meaning; ``standin`` is True for the stand-in.
    """

    num_features: int
    extractor_id: str
    label: str
    standin: bool = False


# ------------------------------------------------------------------------ FID Inception-v3


class FIDInceptionA(InceptionA):
    """Mixed_5b..5d of the TF graph: the pool branch averages without the zero padding."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(pool)]


class FIDInceptionC(InceptionC):
    """Mixed_6b..6e of the TF graph: the pool branch averages without the zero padding."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = layer(branch7x7dbl)
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(pool)]


class FIDInceptionE(InceptionE):
    """Mixed_7b (average pool without padding) and, with ``max_pool``, Mixed_7c (max pool)."""

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1
        )
        if self.max_pool:
            pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pool)]


class FIDInceptionV3(FeatureExtractor):
    """The FID Inception-v3: torchvision's layout (same parameter names) with the TF graph's
    pooling in Mixed_5*, 6*, 7b and 7c, 1008 classes and no auxiliary head."""

    def __init__(self, weights_id: str = "random") -> None:
        super().__init__()
        blocks = [
            BasicConv2d,
            FIDInceptionA,
            InceptionB,
            FIDInceptionC,
            InceptionD,
            FIDInceptionE,
            InceptionAux,
        ]
        # Layers initialise themselves from the global RNG; a caller's stream stays untouched.
        with torch.random.fork_rng(devices=[]):
            self.net = Inception3(
                num_classes=1008, aux_logits=False, init_weights=False, inception_blocks=blocks
            )
            self.net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.num_features = 2048
        self.extractor_id = f"fid-inception-2015-12-05:{weights_id}"
        self.label = INCEPTION_LABEL
        self.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        net = self.net
        x = images.float() / 255
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        for layer in (
            net.Conv2d_1a_3x3,
            net.Conv2d_2a_3x3,
            net.Conv2d_2b_3x3,
            net.maxpool1,
            net.Conv2d_3b_1x1,
            net.Conv2d_4a_3x3,
            net.maxpool2,
            net.Mixed_5b,
            net.Mixed_5c,
            net.Mixed_5d,
            net.Mixed_6a,
            net.Mixed_6b,
            net.Mixed_6c,
            net.Mixed_6d,
            net.Mixed_6e,
            net.Mixed_7a,
            net.Mixed_7b,
            net.Mixed_7c,
        ):
            x = layer(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception(path: str | os.PathLike[str]) -> FIDInceptionV3:
    """The FID Inception with the state dict at ``path`` (keys checked strictly)."""
    source = Path(path)
    if not source.is_file():
        raise UserError(
            f"inception: {source} does not exist; give the pt_inception-2015-12-05 file"
            f"{where_to_get(source)}"
        )
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input, said in one line
        raise UserError(f"inception: {source} is not a PyTorch state dict ({err})") from None
    if not isinstance(state, dict):
        raise UserError(f"inception: {source} holds a {type(state).__name__}, not a state dict")
    model = FIDInceptionV3(weights_id=sha256_file(source)[:16])
    expected = model.net.state_dict()
    # Files saved before BatchNorm counted its batches lack those (unused) counters.
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in required & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise UserError(
            f"inception: {source} is not the FID Inception-v3 state dict ({'; '.join(parts)}); "
            "use pt_inception-2015-12-05-6726825d.pth"
        )
    model.net.load_state_dict(state, strict=False)
    return model


# ----------------------------------------------------------------------------- stand-in


class StandInExtractor(FeatureExtractor):
    """A fixed random conv net (weights drawn from a seeded CPU generator, identical
    everywhere): images at 64x64 -> four stride-2 3x3 convs with leaky ReLU; features are the
    last layer's spatial means and standard deviations (colour and texture), 512 numbers.
    Its distances only compare models on the same data."""

    def __init__(self, seed: int = 2015) -> None:
        super().__init__()
        widths = [3, 32, 64, 128, 256]
        generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            with torch.random.fork_rng(devices=[]):
                conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2 / (c_in * 9))
                )
                conv.bias.zero_()
            layers += [conv, nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.num_features = 2 * widths[-1]
        self.extractor_id = f"standin-conv-v2-seed{seed}"
        self.label = STANDIN_LABEL
        self.standin = True
        self.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        x = self.body(x).flatten(2)
        return torch.cat([x.mean(dim=2), x.std(dim=2)], dim=1)


def build_extractor(inception_path: str | os.PathLike[str] | None = None) -> FeatureExtractor:
    """The FID Inception from ``inception_path``, or (None) the stand-in with a warning."""
    if inception_path:
        return load_inception(inception_path)
    warnings.warn(
        "metrics: no Inception weights given (inception=PATH to pt_inception-2015-12-05-"
        f"6726825d.pth); using the stand-in extractor: FID/KID are {STANDIN_LABEL}, not "
        "comparable with published numbers",
        stacklevel=2,
    )
    return StandInExtractor()


# ------------------------------------------------------------------------------ results


class MetricsResult(dict[str, float]):
    """Metric name -> value (``fid``, ``kid``, ``kid_std``, ``num_real``, ``num_fake``), plus
    which extractor made them (``extractor``: its label, ``extractor_id``) and whether the
    real features came from the cache (``real_from_cache``)."""

    def __init__(self, extractor: FeatureExtractor, real_from_cache: bool) -> None:
        super().__init__()
        self.extractor = extractor.label
        self.extractor_id = extractor.extractor_id
        self.standin = extractor.standin
        self.real_from_cache = real_from_cache

    def to_json(self) -> dict[str, Any]:
        """The values and the extractor's description, for a JSON report."""
        return {
            "metrics": dict(self),
            "extractor": self.extractor,
            "extractor_id": self.extractor_id,
        }


class _Precomputed(nn.Module):
    """torchmetrics' ``feature`` module when the features are already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


# ---------------------------------------------------------------------------- features


def to_uint8(images: Tensor) -> Tensor:
    """NCHW images (uint8 as they are, floats in [-1, 1]) as uint8 RGB."""
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _progress(enabled: bool) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    return Progress(*columns, TimeRemainingColumn(), disable=not enabled, transient=True)


def _prepare(image: Image.Image, resolution: int | None) -> Tensor:
    """A PIL image as uint8 CHW: centre-cropped square and resized when ``resolution`` is set."""
    if resolution is not None:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, 3).permute(2, 0, 1)


def _real_batches(
    paths: Sequence[Path], resolution: int | None, batch_size: int, report: ImageLoadReport
) -> Iterator[Tensor]:
    """Batches of same-sized uint8 images from ``paths`` (bad files skipped into ``report``)."""
    batch: list[Tensor] = []
    for _, image in iter_images(paths, report):
        pixels = _prepare(image, resolution)
        if batch and (len(batch) == batch_size or pixels.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(pixels)
    if batch:
        yield torch.stack(batch)


def real_set_key(
    paths: Sequence[Path], folder: Path, extractor: FeatureExtractor, resolution: int | None
) -> str:
    """Hash of the file list (relative names, sizes, mtimes), preprocessing and extractor."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{extractor.extractor_id}|{resolution}\n".encode())
    for path in paths:
        info = path.stat()
        digest.update(f"{path.relative_to(folder)}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


@torch.no_grad()
def real_features(
    folder: str | os.PathLike[str],
    extractor: FeatureExtractor,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    resolution: int | None = None,
    max_images: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[Tensor, bool]:
    """Features of every image under ``folder`` (recursively; the first ``max_images`` in name
    order) and whether they came from the cache. ``cache_dir=None`` uses the default cache."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"data: real image folder {root} does not exist")
    paths = list_images(root, recursive=True)[:max_images]
    if not paths:
        raise UserError(f"data: {root} holds no images")
    cache = Path(cache_dir or DEFAULT_CACHE_DIR) / (
        f"real-{real_set_key(paths, root, extractor, resolution)}.pt"
    )
    if cache.is_file():
        return torch.load(cache, map_location="cpu", weights_only=True)["features"], True
    report = ImageLoadReport()
    chunks = []
    with _progress(progress) as bar:
        task = bar.add_task(f"real features ({root.name})", total=len(paths))
        for batch in _real_batches(paths, resolution, batch_size, report):
            chunks.append(extractor(batch.to(device)).float().cpu())
            bar.advance(task, batch.shape[0])
    if not chunks:
        raise UserError(f"data: {root} holds no usable image ({report.summary()})")
    features = torch.cat(chunks)
    with atomic_path(cache) as tmp:
        torch.save({"features": features, "folder": str(root), "key": cache.stem}, tmp)
    return features, False


def _fake_batches(fake_images: FakeImages, num: int, batch_size: int) -> Iterator[Tensor]:
    if callable(fake_images):
        for start in range(0, num, batch_size):
            yield fake_images(min(batch_size, num - start))
        return
    left = num
    for batch in fake_images:
        if left <= 0:
            return
        yield batch[:left]
        left -= batch.shape[0]


@torch.no_grad()
def fake_features(
    fake_images: FakeImages,
    extractor: FeatureExtractor,
    *,
    num: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Tensor:
    """Features of ``num`` generated images (fewer if an iterable runs out)."""
    chunks = []
    with _progress(progress) as bar:
        task = bar.add_task("generated features", total=num)
        for batch in _fake_batches(fake_images, num, batch_size):
            chunks.append(extractor(to_uint8(batch).to(device)).float().cpu())
            bar.advance(task, batch.shape[0])
    if not chunks:
        raise UserError("metrics: no generated images were given")
    return torch.cat(chunks)


# ----------------------------------------------------------------------------- metrics


def compute_metrics(
    fake_images: FakeImages,
    real_folder: str | os.PathLike[str],
    *,
    metrics: Sequence[str] = METRICS,
    num: int = 50000,
    extractor: FeatureExtractor | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    resolution: int | None = None,
    max_real: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MetricsResult:
    """FID and/or KID of ``num`` generated images against the images under ``real_folder``.

    ``fake_images``: a function ``count -> images`` or an iterable of batches; NCHW, floats in
    [-1, 1] or uint8. ``extractor``: None = :func:`build_extractor` without weights (the
    stand-in). ``resolution``: centre-crop and resize the real images to it (as the generator
    sees its training set); ``max_real``: use only the first images. KID subsets are capped at
    the smaller set's size. Runs under a forked RNG seeded with ``seed``: the caller's random
    streams are untouched and the result is reproducible.
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise UserError(f"metrics: {unknown or 'none'} unknown; choose from {', '.join(METRICS)}")
    if extractor is None:
        extractor = build_extractor(None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    extractor = extractor.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        reals, cached = real_features(
            real_folder,
            extractor,
            cache_dir=cache_dir,
            resolution=resolution,
            max_images=max_real,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        fakes = fake_features(
            fake_images,
            extractor,
            num=num,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        if min(len(reals), len(fakes)) < 2:
            raise UserError("metrics: FID/KID need at least 2 real and 2 generated images")
        return _statistics(extractor, reals, fakes, metrics, kid_subset_size, kid_subsets, cached)


def _statistics(
    extractor: FeatureExtractor,
    reals: Tensor,
    fakes: Tensor,
    metrics: Sequence[str],
    kid_subset_size: int,
    kid_subsets: int,
    cached: bool,
) -> MetricsResult:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if not (torch.isfinite(reals).all() and torch.isfinite(fakes).all()):
        raise UserError(f"metrics: the {extractor.label} extractor gave non-finite features")
    result = MetricsResult(extractor, real_from_cache=cached)
    features = _Precomputed(reals.shape[1])
    reals, fakes = reals.double(), fakes.double()
    if "fid" in metrics:
        fid = FrechetInceptionDistance(feature=features)
        fid.update(reals, real=True)
        fid.update(fakes, real=False)
        result["fid"] = max(float(fid.compute()), 0.0)
    if "kid" in metrics:
        subset = min(kid_subset_size, len(reals), len(fakes))
        with warnings.catch_warnings():
            # Keeping every feature is the point here (they are already in memory).
            warnings.filterwarnings("ignore", message=".*will save all extracted features")
            kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=subset)
        kid.update(reals, real=True)
        kid.update(fakes, real=False)
        mean, std = kid.compute()
        result["kid"] = float(mean)
        result["kid_std"] = float(std)
    result["num_real"] = float(len(reals))
    result["num_fake"] = float(len(fakes))
    return result
