"""StyleGAN3 ops: bias_act, upfirdn2d (and its helpers) and filtered_lrelu.

Each op runs the CUDA kernels of ``src.stylegan3.ops.cuda`` for CUDA tensors when they build,
else a pure-PyTorch reference path with the same semantics (``impl='auto'|'ref'|'cuda'``, or
``TOONFORGE_OPS_IMPL=ref`` to force the reference everywhere).
"""

from src.stylegan3.ops.bias_act import ACTIVATIONS, bias_act
from src.stylegan3.ops.filtered_lrelu import filtered_lrelu
from src.stylegan3.ops.upfirdn2d import (
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "downsample2d",
    "filter2d",
    "filtered_lrelu",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
