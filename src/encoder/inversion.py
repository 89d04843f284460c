"""Photos -> W+ latents with an encoder, and back to pictures with any generator of the family.

:class:`Inverter` runs e4e in one pass (``ws = encoder(x) + latent_avg``) and ReStyle
iteratively: step 0 sees the photo beside the latent average's picture and predicts a residual
on ``latent_avg``; every further step sees the photo beside the current reconstruction and
refines the latents (5 steps by default, as ReStyle's inference). Generator outputs are pooled
to the encoder's input size (``adaptive_avg_pool2d``, the releases' ``face_pool``).

:class:`DegreeBlend` renders the same latents with the base generator blended towards a cartoon
blend by ``degree``: every layer's blend weight times ``degree`` (0: the base, 1: the blend as
configured), the generator for each degree computed once and cached.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.blend.blending import blend_generators, synthesis_layers
from src.common.errors import UserError
from src.encoder.checkpoints import EncoderBundle
from src.stylegan3.networks import noise_kwargs

DEFAULT_STEPS = 5
CACHED_DEGREES = 8


def resize_to(images: Tensor, size: int) -> Tensor:
    """``images`` at ``size`` x ``size``: average pooling when shrinking (as the releases'
    face_pool), bilinear with antialiasing otherwise; unchanged at that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.adaptive_avg_pool2d(images, (size, size))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def render(generator: nn.Module, ws: Tensor) -> Tensor:
    """The generator's float32 synthesis of ``ws`` (StyleGAN2 with constant noise), in
    [-1, 1]-ish. The generator keeps its own precision (its fp16 layers on CUDA, else float32)
    under a Lightning ``bf16-mixed`` / ``16-mixed`` autocast, as the StyleGAN stages do."""
    with torch.autocast(ws.device.type, enabled=False):
        return generator.synthesis(ws.float(), **noise_kwargs(generator, "const"))


def check_fits(bundle: EncoderBundle, generator: nn.Module) -> None:
    """Refuse, in one line, an encoder whose styles do not fit the generator's ws."""
    encoder = bundle.encoder
    if (encoder.n_styles, encoder.w_dim) != (generator.num_ws, generator.w_dim):
        raise UserError(
            f"{bundle.source}: the encoder predicts {encoder.n_styles} ws of {encoder.w_dim}; "
            f"the generator takes {generator.num_ws} of {generator.w_dim}; use the encoder "
            "trained for this generator"
        )


class Inverter(nn.Module):
    """Encoder + latent average + the (frozen) generator it was trained against."""

    def __init__(self, bundle: EncoderBundle, generator: nn.Module, steps: int = DEFAULT_STEPS):
        super().__init__()
        check_fits(bundle, generator)
        if steps < 1:
            raise UserError(f"restyle_steps={steps}: use at least 1")
        self.encoder = bundle.encoder.eval()
        self.generator = generator.eval().requires_grad_(False)
        self.register_buffer("latent_avg", bundle.latent_avg.clone())
        self.iterative = bundle.iterative
        self.steps = int(steps)
        self.input_size = self.encoder.input_size
        self._average_image: Tensor | None = None

    def average_image(self) -> Tensor:
        """The generator's picture of the latent average at the encoder's size, [1, 3, S, S]."""
        if self._average_image is None:
            with torch.no_grad():
                image = render(self.generator, self.latent_avg.unsqueeze(0))
            self._average_image = resize_to(image, self.input_size)
        return self._average_image

    def forward(self, images: Tensor, steps: int | None = None) -> Tensor:
        """W+ latents [N, num_ws, w_dim] of RGB images in [-1, 1] (any square size)."""
        x = resize_to(images, self.input_size)
        latent = self.latent_avg.unsqueeze(0).expand(x.shape[0], -1, -1)
        if not self.iterative:
            return self.encoder(x) + latent
        reconstruction = self.average_image().expand(x.shape[0], -1, -1, -1)
        count = self.steps if steps is None else int(steps)
        for step in range(count):
            latent = latent + self.encoder(torch.cat([x, reconstruction], dim=1))
            if step + 1 < count:
                reconstruction = resize_to(render(self.generator, latent), self.input_size)
        return latent


class DegreeBlend:
    """The base generator blended towards ``blended`` by a degree in [0, 1], cached per degree.

    ``blended`` is the blend stage's output (per-layer weights ``b``); at degree ``d`` each layer
    becomes ``base + d * b * (tuned - base)``, i.e. the blend's weights scaled by ``d``. Degree 0
    is the base generator and degree 1 the blended one, tensor for tensor.
    """

    def __init__(self, base: nn.Module, blended: nn.Module) -> None:
        self.base = base.eval().requires_grad_(False)
        self.blended = blended.eval().requires_grad_(False)
        self.layers = len(synthesis_layers(self.base))
        self._cache: OrderedDict[float, nn.Module] = OrderedDict()
        self.at(1.0)

    def at(self, degree: float) -> nn.Module:
        """The generator for ``degree`` (built on first use)."""
        degree = checked_degree(degree)
        if degree not in self._cache:
            if degree == 0.0:
                generator = self.base
            elif degree == 1.0:
                generator = self.blended
            else:
                generator = blend_generators(self.base, self.blended, [degree] * self.layers)
                generator.eval().requires_grad_(False)
            self._cache[degree] = generator
            while len(self._cache) > CACHED_DEGREES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(degree)
        return self._cache[degree]


def checked_degree(value: object) -> float:
    """``value`` as a degree in [0, 1], or a one-line error."""
    try:
        degree = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"degree={value!r} is not a number; use 0 (photo) .. 1 (cartoon)") from None
    if not 0.0 <= degree <= 1.0:
        raise UserError(f"degree={degree} is outside [0, 1]; 0 is the photo, 1 the full cartoon")
    return degree
