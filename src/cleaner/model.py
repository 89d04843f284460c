"""The good/bad classifier: a timm backbone with one output (the logit of "good"), its
LightningModule, the threshold choice, and the ``classifier.pt`` file the filter loads.

``classifier.pt`` is a plain dict loaded with ``weights_only=True``: the backbone name and
arguments, the weights, the input size, side and normalisation, the threshold and the val
metrics it was chosen with. Loading builds the backbone with ``pretrained=False``: nothing is
ever downloaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    binary_recall_at_fixed_precision,
)

from src.common import tags
from src.common.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from src.common.errors import UserError

logger = logging.getLogger(__name__)

FORMAT = "toonforge.cleaner/1"


def create_backbone(name: str, pretrained_file: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm model ``name`` with one output; weights from ``pretrained_file`` when given (its
    classifier head is dropped), else random. Never downloads."""
    if not timm.is_model(name):
        raise UserError(
            f"backbone {name!r} is not a timm model; pick one of timm.list_models(), "
            "e.g. resnet18, efficientnet_b0, convnext_nano"
        )
    options: dict[str, Any] = {"pretrained": False, "num_classes": 1, **kwargs}
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise UserError(
                f"pretrained_file {path} does not exist; download the backbone weights there "
                "or set pretrained_file=null to train from scratch"
            )
        options.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return timm.create_model(name, **options)


def normalisation(backbone: nn.Module, pretrained: bool) -> tuple[list[float], list[float]]:
    """The mean and std the backbone's weights expect; [-1, 1] scaling for a net from scratch."""
    if not pretrained:
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    config = timm.data.resolve_data_config({}, model=backbone)
    return [float(v) for v in config["mean"]], [float(v) for v in config["std"]]


class GoodBadClassifier(L.LightningModule):
    """Binary classifier trained with BCE on "good" = 1; logs loss, accuracy and ROC-AUC."""

    def __init__(
        self,
        backbone: str,
        pretrained_file: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_backbone(backbone, pretrained_file, **(backbone_kwargs or {}))
        self.val_accuracy = BinaryAccuracy()
        self.val_auroc = BinaryAUROC()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The logit of "good" per image (N,)."""
        return self.net(images).squeeze(1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"])
        self.log(tags.LOSS, loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"])
        target = batch["target"]
        loss = F.binary_cross_entropy_with_logits(logits, target)
        probs = torch.sigmoid(logits)
        self.val_accuracy(probs, target.long())
        self.val_auroc(probs, target.long())
        self.log(tags.val("loss"), loss, batch_size=len(logits))
        self.log(tags.val("acc"), self.val_accuracy, prog_bar=True, batch_size=len(logits))
        self.log(tags.val("auroc"), self.val_auroc, batch_size=len(logits))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=steps, pct_start=0.15
        )
        scheduler = {"scheduler": schedule, "interval": "step", "name": tags.LR}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


@dataclass
class ThresholdChoice:
    """The threshold on P(good) and whether it reaches the target precision on val."""

    threshold: float
    target_precision: float
    reached: bool


def choose_threshold(
    probs: torch.Tensor, targets: torch.Tensor, target_precision: float
) -> ThresholdChoice:
    """The lowest threshold whose val precision of "good" (P >= threshold) is at least
    ``target_precision``, which keeps the most good pairs; when no threshold reaches it, the one
    with the highest precision, and ``reached`` is False."""
    if not 0 < target_precision <= 1:
        raise UserError(f"target_precision={target_precision} must be in (0, 1], e.g. 0.95")
    targets = targets.long()
    recall, threshold = binary_recall_at_fixed_precision(probs, targets, target_precision)
    if recall > 0 and torch.isfinite(threshold):
        return ThresholdChoice(float(threshold), target_precision, True)
    precision, _, thresholds = binary_precision_recall_curve(probs, targets)
    best = int(torch.argmax(precision[:-1])) if len(thresholds) else 0
    fallback = float(thresholds[best]) if len(thresholds) else 0.5
    logger.warning(
        "no threshold reaches precision %.3f for 'good' on val (best %.3f); using %.4f",
        target_precision,
        float(precision[best]) if len(thresholds) else 0.0,
        fallback,
    )
    return ThresholdChoice(fallback, target_precision, False)


def keep_mask(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which pairs to keep: P(good) >= ``threshold``, compared as logits so that threshold 0
    keeps every pair and threshold 1 none, whatever the float rounding of P near 0 and 1."""
    if not 0 <= threshold <= 1:
        raise UserError(f"threshold={threshold} must be between 0 and 1")
    return logits.double() >= torch.logit(torch.tensor(threshold, dtype=torch.float64))


@dataclass
class Classifier:
    """A loaded ``classifier.pt``: the network in eval mode and how to feed and read it."""

    net: nn.Module
    backbone: str
    image_size: int
    side: str
    mean: list[float]
    std: list[float]
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)


def save_classifier(
    path: str | os.PathLike[str],
    module: GoodBadClassifier,
    *,
    image_size: int,
    side: str,
    mean: list[float],
    std: list[float],
    threshold: ThresholdChoice,
    metrics: dict[str, Any],
) -> Path:
    """Write ``classifier.pt`` atomically: weights, how to rebuild and feed them, threshold."""
    hparams = module.hparams
    payload = {
        "format": FORMAT,
        "backbone": hparams.backbone,
        "backbone_kwargs": dict(hparams.backbone_kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in module.net.state_dict().items()},
        "image_size": int(image_size),
        "side": side,
        "mean": list(mean),
        "std": list(std),
        "threshold": float(threshold.threshold),
        "target_precision": float(threshold.target_precision),
        "target_precision_reached": bool(threshold.reached),
        "metrics": metrics,
    }
    return save_checkpoint(payload, path)


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the network of a ``classifier.pt`` (no download, no code from the file)."""
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a cleaner classifier ({FORMAT}); point classifier= at the "
            "classifier.pt written by python -m src.cleaner"
        )
    net = create_backbone(payload["backbone"], None, **payload["backbone_kwargs"])
    load_state_dict_checked(net, payload["state_dict"], path)
    net.eval().to(device)
    meta = {k: payload[k] for k in ("target_precision", "target_precision_reached", "metrics")}
    return Classifier(
        net=net,
        backbone=payload["backbone"],
        image_size=int(payload["image_size"]),
        side=payload["side"],
        mean=list(payload["mean"]),
        std=list(payload["std"]),
        threshold=float(payload["threshold"]),
        meta=meta,
    )
