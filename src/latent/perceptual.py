"""LPIPS (VGG16) for the projector, from weights on disk: nothing is downloaded.

Two backbones, chosen by ``backbone``:

- ``torchvision``: the ``lpips`` package's LPIPS with its learned linear heads (``v0.1/vgg.pth``,
  shipped inside the package) on a VGG16 trunk built without weights and filled by name from
  torchvision's ImageNet ``vgg16`` state dict (``vgg16-397923af.pth``): ``features.<i>.*`` goes
  to the trunk slice that holds conv ``i``, checked before the network is built.
  ``vgg16="random"`` keeps the random trunk (tests and smoke runs only; results say so).
- ``nvidia``: NVIDIA's ``vgg16.pt`` TorchScript (the one StyleGAN2-ADA's projector uses), called
  as it does: images in [0, 255], ``resize_images=False, return_lpips=True``, distance the sum of
  squared feature differences.

Both give one distance per sample for images in [-1, 1].
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from src.common.checkpoint import load_checkpoint
from src.common.errors import UserError

BACKBONES = ("torchvision", "nvidia")
RANDOM_WEIGHTS = "random"


class Perceptual(nn.Module):
    """A frozen perceptual distance: ``forward(a, b)`` -> [N] for images in [-1, 1]."""

    label: str


class PackageLpips(Perceptual):
    """The ``lpips`` package's VGG16 LPIPS with a trunk state (see :func:`vgg16_trunk_state`)."""

    def __init__(self, trunk_state: dict[str, torch.Tensor] | None, label: str) -> None:
        super().__init__()
        import lpips

        # pnet_rand builds torchvision's vgg16 without weights, so nothing is downloaded;
        # pretrained (the linear heads) come from the package's own weights folder.
        with warnings.catch_warnings():  # torchvision's note on the legacy `pretrained` flag
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        if trunk_state is not None:
            self.lpips.net.load_state_dict(trunk_state)
        self.lpips.requires_grad_(False).eval()
        self.label = label

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """LPIPS per sample."""
        return self.lpips(first, second).flatten()


class NvidiaLpips(Perceptual):
    """NVIDIA's ``vgg16.pt`` TorchScript feature network."""

    def __init__(self, module: torch.jit.ScriptModule, label: str) -> None:
        super().__init__()
        self.net = module.eval()
        self.label = label

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Sum of squared differences of the normalised, head-weighted VGG16 features."""
        feats = [
            self.net((x + 1) * 127.5, resize_images=False, return_lpips=True)
            for x in (first, second)
        ]
        return (feats[0] - feats[1]).square().sum(dim=1)


# LPIPS splits torchvision's vgg16 ``features`` after relu1_2, relu2_2, relu3_3, relu4_3 and
# relu5_3: slice k holds the modules with these indices.
LPIPS_SLICES = (range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30))


def vgg16_conv_shapes() -> dict[int, tuple[int, int, int, int]]:
    """torchvision vgg16 ``features`` index -> conv weight shape, from its layer list (cfg D)."""
    from torchvision.models.vgg import cfgs

    shapes, index, in_ch = {}, 0, 3
    for entry in cfgs["D"]:
        if entry == "M":
            index += 1
            continue
        shapes[index] = (int(entry), in_ch, 3, 3)
        in_ch = int(entry)
        index += 2  # the conv and its ReLU
    return shapes


def vgg16_trunk_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """torchvision's ``features.<i>.weight/bias`` renamed to the lpips trunk's
    ``slice<k>.<i>.*``, checked for completeness and shapes (the classifier is left out)."""
    shapes = vgg16_conv_shapes()
    mapped = {}
    for index, shape in shapes.items():
        (slice_number,) = [k + 1 for k, span in enumerate(LPIPS_SLICES) if index in span]
        for kind, expected in (("weight", shape), ("bias", shape[:1])):
            key = f"features.{index}.{kind}"
            if key not in state:
                raise UserError(
                    f"{source} lacks {key}; give torchvision's vgg16 ImageNet weights "
                    "(vgg16-397923af.pth)"
                )
            value = state[key]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise UserError(f"{source}: {key} is {found}, VGG16 needs {expected}")
            mapped[f"slice{slice_number}.{index}.{kind}"] = value.float()
    return mapped


def load_perceptual(
    backbone: str, vgg16: str | os.PathLike[str] | None, key: str = "lpips.vgg16"
) -> Perceptual:
    """The LPIPS distance with ``backbone``'s weights from ``vgg16`` (see the module doc)."""
    if backbone not in BACKBONES:
        raise UserError(f"lpips.backbone: {backbone!r}; use one of {', '.join(BACKBONES)}")
    if not vgg16:
        raise UserError(
            f"{key} is not set: give the path of torchvision's vgg16-397923af.pth "
            "(lpips.backbone=torchvision) or NVIDIA's vgg16.pt (lpips.backbone=nvidia)"
        )
    if str(vgg16) == RANDOM_WEIGHTS:
        if backbone != "torchvision":
            raise UserError(f"{key}=random works with lpips.backbone=torchvision only")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return PackageLpips(None, "LPIPS VGG16 (random stand-in trunk)")
    path = Path(vgg16)
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist; put the VGG16 weights there")
    if backbone == "nvidia":
        try:
            with warnings.catch_warnings():  # torch's note that TorchScript is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # a user's file: every failure to parse is the file's
            raise UserError(
                f"{key}: {path} is not NVIDIA's vgg16.pt TorchScript ({type(err).__name__})"
            ) from None
        return NvidiaLpips(module, f"LPIPS VGG16 (NVIDIA {path.name})")
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{key}: {path} is not a state dict; give torchvision's vgg16 weights")
    return PackageLpips(vgg16_trunk_state(state, f"{key}: {path}"), f"LPIPS VGG16 ({path.name})")
