"""Export image-to-image generators to ONNX and TorchScript, and check ONNX against PyTorch.

Every exported graph follows one contract so serving code never needs to know which stage made
it: one input named ``input`` (``N x C x H x W``) and one output named ``output``, with the batch
axis dynamic. ONNX goes through the ``torch.export`` based exporter (the TorchScript based one
is deprecated); files are written beside their target and renamed into place, so an interrupted
export never leaves a truncated model behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from src.common.fileio import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = "batch"
MAX_BATCH = 4096

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
