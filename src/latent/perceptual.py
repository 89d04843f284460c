"""LPIPS (VGG16) for the projector, from weights on disk: nothing is downloaded.

Two backbones, chosen by ``backbone``:

- ``torchvision``: the ``lpips`` package's LPIPS with its learned linear heads (``v0.1/vgg.pth``,
  shipped inside the package) on a VGG16 trunk built without weights and filled by name from
  torchvision's ImageNet ``vgg16`` state dict (``vgg16-397923af.pth``): ``features.<i>.*`` goes
  to the trunk slice that holds conv ``i``. ``vgg16="random"`` keeps the random trunk (tests and
  smoke runs only; results say so).
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
    """The ``lpips`` package's VGG16 LPIPS with a trunk from a torchvision state dict."""

    def __init__(self, vgg16_state: dict[str, torch.Tensor] | None, label: str) -> None:
        super().__init__()
        import lpips

        # pnet_rand builds torchvision's vgg16 without weights, so nothing is downloaded;
        # pretrained (the linear heads) come from the package's own weights folder.
        with warnings.catch_warnings():  # torchvision's note on the legacy `pretrained` flag
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        if vgg16_state is not None:
            load_vgg16_trunk(self.lpips.net, vgg16_state, label)
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


def vgg16_slices(trunk: nn.Module) -> dict[int, str]:
    """torchvision ``features`` index -> the trunk's module name (``slice<k>.<index>``)."""
    names = {}
    for slice_name, child in trunk.named_children():
        for index, _ in child.named_children():
            names[int(index)] = f"{slice_name}.{index}"
    return names


def load_vgg16_trunk(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy torchvision's ``features.<i>.weight/bias`` into the lpips trunk, checked by name."""
    slices = vgg16_slices(trunk)
    own = trunk.state_dict()
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features" or len(parts) != 3:
            continue  # the classifier head is not part of the trunk
        target = f"{slices.get(int(parts[1]), '?')}.{parts[2]}"
        if target not in own:
            raise UserError(f"{source}: {key} has no place in the VGG16 trunk; is it a VGG16?")
        if tuple(own[target].shape) != tuple(value.shape):
            raise UserError(
                f"{source}: {key} is {tuple(value.shape)}, VGG16 needs {tuple(own[target].shape)}"
            )
        mapped[target] = value.float()
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise UserError(
            f"{source} lacks {len(missing)} VGG16 trunk tensors (e.g. features weights for "
            f"{missing[0]}); give torchvision's vgg16 ImageNet weights (vgg16-397923af.pth)"
        )
    trunk.load_state_dict(mapped)


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
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # a user's file: every failure to parse is the file's
            raise UserError(
                f"{key}: {path} is not NVIDIA's vgg16.pt TorchScript ({type(err).__name__})"
            ) from None
        return NvidiaLpips(module, f"LPIPS VGG16 (NVIDIA {path.name})")
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise UserError(f"{key}: {path} is not a state dict; give torchvision's vgg16 weights")
    return PackageLpips(state, f"LPIPS VGG16 ({path.name})")
