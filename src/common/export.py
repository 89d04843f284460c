"""Export every image-to-image generator family to ONNX or TorchScript, checked, from any file.

``python -m src.common.export ckpt=... out=g.onnx`` (``src.pix2pix.export`` is the same command)
takes a pix2pix or CycleGAN generator (U-Net or ResNet), U-GAT-IT or photo2cartoon, from our
``generator.pt``, a stage's Lightning checkpoint or the reference projects' files, with the
image size read off the network or the file where they fix it (``configs/export/export.yaml``).

Every exported graph follows one contract so serving code never needs to know which stage made
it: one input named ``input`` (``N x C x H x W``) and one output named ``output``, with the batch
axis dynamic. ONNX goes through the ``torch.export`` based exporter (the TorchScript based one
is deprecated). An ONNX file is written under a temporary name, checked against PyTorch, and
only then moved into place: a failed export leaves nothing behind.

The check compares ONNX Runtime and float32 PyTorch with a float64 PyTorch forward on toy-face
photos and noise. ONNX Runtime's float32 kernels reduce less exactly than PyTorch's, so a fixed
absolute limit fails sound graphs of large generators; a graph fails when ONNX Runtime's error is
more than ``factor`` times PyTorch's own and above ``floor``. StyleGAN
generators (latents in, images out) are not exported by this command.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.fileio import atomic_path
from src.common.generators import FORMAT as GENERATOR_FORMAT
from src.common.generators import load_generator, resolve_builder

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = "batch"
MAX_BATCH = 4096
FORMATS = ("onnx", "torchscript")
# The reference releases train at 256 px; the size of a file that does not fix it otherwise.
RELEASE_SIZE = 256
# A graph fails the check when ONNX Runtime is more than FACTOR times further from float64 than
# float32 PyTorch is and further than FLOOR. At 256 px ONNX Runtime's float32 error is 0.6x to
# 7.5x PyTorch's (benchmarks/export_parity.py): its long reductions (layer norm over a whole
# feature map) sum less exactly, and more so on bigger images. FLOOR, 1/78 of an 8-bit step in
# [-1, 1], is invisible in served images and keeps nearly exact networks from failing on noise.
# A wrong graph (an op, a padding, a norm) is off by 1e-3 to 1.
FACTOR = 20.0
FLOOR = 1e-4
CHECK_IMAGES = 3
# Toy faces render at up to this side; larger checks resize them.
TOY_FACE_MAX = 256
# Lightning checkpoints of the stages: the generator's key prefix -> its family.
LIGHTNING_PREFIXES = {
    "generator.": "pix2pix",
    "generator_ab.": "cyclegan",
    "gen_a2b.": "photo2cartoon",
}
DIRECTIONS = {"AtoB": "genA2B", "BtoA": "genB2A"}

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _quiet_exporter() -> contextlib.ExitStack:
    """Silence the exporter's progress prints and opset-conversion notices (not errors)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


def export_onnx(
    model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str], *, opset: int = 17
) -> Path:
    """Write ``model`` (in eval mode) as a single-file ONNX graph with a dynamic batch axis.

    ``example`` is one input batch (any batch size); its channel and spatial sizes are fixed
    in the graph. The graph has input ``input`` and output ``output``. Returns ``path``.
    """
    target = Path(path)
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=MAX_BATCH)
    with _eval_mode(model), torch.no_grad(), _quiet_exporter(), atomic_path(target) as tmp:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    log.info("wrote ONNX graph %s (opset %d)", target, opset)
    return target


def export_torchscript(
    model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]
) -> Path:
    """Trace ``model`` (in eval mode) on ``example`` and save the TorchScript module to ``path``.

    Convolutional generators have no data-dependent control flow, so a trace works for any
    batch size and keeps the module loadable with ``torch.jit.load`` without our code.
    """
    target = Path(path)
    with _eval_mode(model), torch.no_grad(), _quiet_exporter():
        traced = torch.jit.trace(model, (example,), check_trace=False)
    with atomic_path(target) as tmp:
        traced.save(str(tmp))
    log.info("wrote TorchScript module %s", target)
    return target


def onnx_max_abs_diff(
    model: nn.Module, path: str | os.PathLike[str], example: torch.Tensor
) -> float:
    """Largest absolute difference between ``model(example)`` and the ONNX graph at ``path``.

    Runs the graph with ONNX Runtime on CPU, the way serving does, so a small number here
    means the exported file is a faithful copy of the PyTorch generator.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example.detach().cpu().float()
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    with _eval_mode(model), torch.no_grad():
        torch_out = model(example).detach().cpu().float()
    if tuple(onnx_out.shape) != tuple(torch_out.shape):
        return float("inf")
    return float((torch.from_numpy(onnx_out) - torch_out).abs().max())


@dataclass
class LoadedGenerator:
    """A generator in eval mode, its family, a name for messages and the side it runs at.

    ``fixed_size`` is the side the network itself requires (a U-Net's ``2 ** num_downs``, a
    full U-GAT-IT's ``img_size``), or None where any suitable size works.
    """

    module: nn.Module
    family: str
    config: dict[str, Any]
    image_size: int
    label: str
    fixed_size: int | None = None


def describe(family: str, config: dict[str, Any]) -> str:
    """A generator's name for messages: ``pix2pix U-Net unet_256``, ``photo2cartoon`` ..."""
    if family == "photo2cartoon":
        kind = (
            "photo2cartoon"
            if config.get("kind", "photo2cartoon") == "photo2cartoon"
            else "U-GAT-IT"
        )
        return f"{kind} generator ({'light' if config.get('light', True) else 'full'})"
    net = str(config.get("netG", ""))
    if family == "cyclegan":
        shape = "ResNet" if net.startswith("resnet") else "U-Net"
        return f"CycleGAN {shape} generator {net}"
    if family == "pix2pix":
        return f"pix2pix U-Net generator {net}"
    return f"{family} generator"


def network_size(family: str, config: dict[str, Any]) -> int | None:
    """The image side the network requires, where its architecture fixes one."""
    net = str(config.get("netG", ""))
    if family in ("pix2pix", "cyclegan") and net.startswith("unet_"):
        return int(net.removeprefix("unet_"))
    if family == "photo2cartoon" and not config.get("light", True):
        return int(config["img_size"])
    return None


def _loaded(
    module: nn.Module, family: str, config: dict[str, Any], recorded: int | None
) -> LoadedGenerator:
    fixed = network_size(family, config)
    size = fixed or recorded or RELEASE_SIZE
    return LoadedGenerator(
        module.eval(), family, dict(config), int(size), describe(family, config), fixed
    )


def _from_lightning(payload: dict[str, Any], source: Path) -> LoadedGenerator:
    state = payload["state_dict"]
    hparams = payload["hyper_parameters"]
    for prefix, family in LIGHTNING_PREFIXES.items():
        if any(key.startswith(prefix) for key in state) and "generator" in hparams:
            config = dict(hparams["generator"])
            module = resolve_builder(family)(config)
            weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            load_state_dict_checked(module, weights, f"{source} [{describe(family, config)}]")
            recorded = hparams.get("image_size") or config.get("img_size")
            return _loaded(module, family, config, recorded)
    raise UserError(
        f"{source} is a Lightning checkpoint, but not of a pix2pix, CycleGAN or photo2cartoon "
        "stage (no generator in it); export a stage's generator.pt or last.ckpt"
    )


def _from_reference_net_g(
    state: dict[str, torch.Tensor], source: Path, options: dict[str, Any]
) -> LoadedGenerator:
    from src.cyclegan import interop as cyclegan_interop
    from src.pix2pix import interop as pix2pix_interop

    config = cyclegan_interop.infer_generator_config(state)
    config.update({k: v for k, v in options.items() if v is not None})
    if str(config["netG"]).startswith("resnet"):
        module = resolve_builder("cyclegan")(config)
        module.load_state_dict(cyclegan_interop.from_reference(module, state, str(source)))
        return _loaded(module, "cyclegan", config, None)
    # pix2pix and CycleGAN U-Nets share the reference layout; pix2pix's family builds them.
    config.pop("padding", None)
    module = resolve_builder("pix2pix")(config)
    label = f"U-Net generator {config['netG']} (pix2pix / CycleGAN layout)"
    module.load_state_dict(pix2pix_interop.from_reference(module, state, str(source), label))
    return _loaded(module, "pix2pix", config, None)


def _from_ugatit_release(payload: dict[str, Any], source: Path, direction: str) -> LoadedGenerator:
    from src.photo2cartoon.interop import generator_from_reference, infer_generator_config

    if direction not in DIRECTIONS:
        raise UserError(f"direction: unknown '{direction}'; use one of {', '.join(DIRECTIONS)}")
    key = DIRECTIONS[direction]
    if key not in payload:
        raise UserError(f"{source} has no {key} generator; pick direction= from the file's")
    state = payload[key]
    module = generator_from_reference(state, f"{source} [{key}]")
    config = {"kind": module.kind, **infer_generator_config(state)}
    return _loaded(module, "photo2cartoon", config, None)


def load_any_generator(
    path: str | os.PathLike[str],
    release_options: dict[str, Any] | None = None,
    *,
    direction: str = "AtoB",
) -> LoadedGenerator:
    """Any generator the project trains, from any file a user holds, in eval mode.

    ``path``: an exported ``generator.pt`` (every family), a Lightning checkpoint of the pix2pix,
    CycleGAN or photo2cartoon stage, a pix2pix / CycleGAN reference ``latest_net_G*.pth`` (U-Net
    or ResNet; the settings are read off its keys, non-null ``release_options`` override them)
    or a U-GAT-IT / photo2cartoon release (``direction`` picks genA2B or genB2A).
    """
    source = Path(path)
    payload = load_checkpoint(source)
    if isinstance(payload, dict) and payload.get("format") == GENERATOR_FORMAT:
        bundle = load_generator(source)
        fixed = network_size(bundle.family, bundle.config)
        return LoadedGenerator(
            bundle.module,
            bundle.family,
            bundle.config,
            bundle.image_size,
            describe(bundle.family, bundle.config),
            fixed,
        )
    if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
        return _from_lightning(payload, source)
    if isinstance(payload, dict) and "genA2B" in payload:
        return _from_ugatit_release(payload, source, direction)
    if (
        isinstance(payload, dict)
        and payload
        and all(isinstance(v, torch.Tensor) for v in payload.values())
    ):
        return _from_reference_net_g(payload, source, dict(release_options or {}))
    raise UserError(
        f"{source} is none of: generator.pt, a pix2pix / CycleGAN / photo2cartoon Lightning "
        "checkpoint, a pix2pix or CycleGAN latest_net_G*.pth, a U-GAT-IT / photo2cartoon release "
        "(StyleGAN generators are not exported by this command); check the path"
    )


def check_images(size: int, count: int = CHECK_IMAGES, seed: int = 0) -> torch.Tensor:
    """``count`` inputs in [-1, 1] at ``size``: toy-face photos, the last one uniform noise.

    Faces give the smooth regions and edges real inputs have, noise the extremes.
    """
    from src.common.toyfaces.render import make_face

    side = min(size, TOY_FACE_MAX)
    images = []
    for index in range(max(0, count - 1)):
        photo = make_face(seed, "export_check", index, side).photo
        images.append(torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    faces = torch.stack(images) if images else torch.zeros(0, 3, side, side)
    if side != size:
        faces = F.interpolate(faces, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.cat([faces.clamp(-1, 1), noise])[:count]


@dataclass(frozen=True)
class ParityReport:
    """How far ONNX Runtime and float32 PyTorch are from a float64 PyTorch forward."""

    onnx_error: float
    torch_error: float
    onnx_vs_torch: float
    allowed: float

    @property
    def passed(self) -> bool:
        """ONNX Runtime's error is within ``allowed`` (and the shapes matched)."""
        return self.onnx_error <= self.allowed

    def summary(self) -> str:
        """Both errors and the limit, for messages."""
        return (
            f"max abs error against float64 PyTorch: ONNX Runtime {self.onnx_error:.2e}, "
            f"float32 PyTorch {self.torch_error:.2e} (limit {self.allowed:.2e}); "
            f"ONNX Runtime vs PyTorch {self.onnx_vs_torch:.2e}"
        )


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    inputs: torch.Tensor,
    *,
    factor: float = FACTOR,
    floor: float = FLOOR,
) -> ParityReport:
    """Compare the ONNX graph at ``path`` and ``model`` with ``model`` run in float64.

    The graph passes when ONNX Runtime's max abs error is at most ``factor`` times float32
    PyTorch's (and ``floor`` at least): both runtimes round, only a wrong graph is far off.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = inputs.detach().cpu().float()
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
    with _eval_mode(model), torch.no_grad():
        torch_out = model(batch).float()
    exact = copy.deepcopy(model).cpu().double().eval()
    with torch.no_grad():
        reference = exact(batch.double())
    onnx_tensor = torch.from_numpy(onnx_out).double()
    torch_error = float((torch_out.double() - reference).abs().max())
    allowed = max(factor * torch_error, floor)
    if onnx_tensor.shape != reference.shape:
        return ParityReport(float("inf"), torch_error, float("inf"), allowed)
    return ParityReport(
        onnx_error=float((onnx_tensor - reference).abs().max()),
        torch_error=torch_error,
        onnx_vs_torch=float((onnx_tensor - torch_out.double()).abs().max()),
        allowed=allowed,
    )


def export_checked_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    size: int,
    *,
    label: str = "generator",
    opset: int = 17,
    factor: float = FACTOR,
    floor: float = FLOOR,
    images: int = CHECK_IMAGES,
) -> ParityReport:
    """Export ``model`` at ``size`` px, check it (:func:`check_onnx`), then move it to ``out``.

    The graph is written under a temporary name beside ``out`` and moved into place only when
    the check passes (checked at a batch of ``images``, another size than the exported one, so
    the batch axis is known to be dynamic); a failure removes it and raises a UserError that
    names the generator and both errors.
    """
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".unchecked", dir=target.parent
    )
    os.close(handle)
    unchecked = Path(name)
    try:
        example = check_images(size, 1)
        export_onnx(model, example, unchecked, opset=opset)
        report = check_onnx(
            model, unchecked, check_images(size, images), factor=factor, floor=floor
        )
        if not report.passed:
            raise UserError(
                f"{label}: the ONNX graph is not a faithful copy, so {target} was not written: "
                f"{report.summary()}; ONNX Runtime's error is over {factor:g}x PyTorch's own. "
                "Try another opset (opset=...) or format=torchscript"
            )
        os.replace(unchecked, target)
    finally:
        unchecked.unlink(missing_ok=True)
    log.info("%s: wrote %s (%s)", label, target, report.summary())
    return report


def export_generator(
    loaded: LoadedGenerator,
    out: str | os.PathLike[str],
    kind: str,
    *,
    size: int | None = None,
    opset: int = 17,
    factor: float = FACTOR,
    floor: float = FLOOR,
) -> ParityReport | None:
    """Write ``loaded`` to ``out`` as ``kind`` (``onnx``: checked; returns the check's report).

    ``size`` overrides the generator's side; a size its network cannot take is a UserError.
    """
    if kind not in FORMATS:
        raise UserError(f"format: unknown '{kind}'; use one of {', '.join(FORMATS)}")
    side = int(size or loaded.image_size)
    fixed = loaded.fixed_size
    if fixed and (side % fixed if loaded.family != "photo2cartoon" else side != fixed):
        need = f"a multiple of {fixed}" if loaded.family != "photo2cartoon" else str(fixed)
        raise UserError(f"size={side}: the {loaded.label} takes {need} px; drop size= or fix it")
    if kind == "torchscript":
        export_torchscript(loaded.module, check_images(side, 1), out)
        return None
    return export_checked_onnx(
        loaded.module, out, side, label=loaded.label, opset=opset, factor=factor, floor=floor
    )


def main() -> None:
    """``python -m src.common.export``: load ``ckpt``, export it to ``out``, print the check."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from src.common.stage import CONFIG_DIR, fail

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR / "export"), config_name="export")
    def run(cfg: DictConfig) -> None:
        try:
            kind = cfg.format or ("onnx" if str(cfg.out).endswith(".onnx") else "torchscript")
            options = OmegaConf.to_container(cfg.generator, resolve=True)
            assert isinstance(options, dict)
            loaded = load_any_generator(cfg.ckpt, options, direction=str(cfg.direction))
            report = export_generator(
                loaded,
                cfg.out,
                kind,
                size=cfg.size,
                opset=int(cfg.opset),
                factor=float(cfg.tolerance_factor),
                floor=float(cfg.tolerance_floor),
            )
        except UserError as err:
            fail(str(err))
        check = "" if report is None else f" ({report.summary()})"
        side = cfg.size or loaded.image_size
        print(f"exported {loaded.label} from {cfg.ckpt} at {side} px as {kind} -> {cfg.out}{check}")

    run()


if __name__ == "__main__":
    main()
