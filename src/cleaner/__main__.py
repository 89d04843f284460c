"""``python -m src.cleaner``: train the good/bad classifier (the chain's ``cleaner`` stage).

Reads labelled pairs (the labelling page's labels file, or good/ and bad/ folders), splits each
class into train and val, trains a timm backbone with class-balanced batches, then picks the
threshold on val for the target precision of "good". Writes ``classifier.pt``, ``metrics.json``,
``confusion_matrix.png`` and ``wrong_val.png`` (most confidently wrong val images), the last two
also to TensorBoard. An interrupted run continues from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_precision,
    binary_recall,
)

from src.cleaner.data import (
    CleanerDataModule,
    LabelledItem,
    check_classes,
    drop_bad_files,
    items_from_folders,
    items_from_labels,
    stratified_split,
)
from src.cleaner.labels import check_side
from src.cleaner.model import (
    GoodBadClassifier,
    ThresholdChoice,
    choose_threshold,
    normalisation,
    save_classifier,
)
from src.cleaner.pictures import captioned_sheet, confusion_matrix_picture, log_picture
from src.common import tags
from src.common.errors import UserError
from src.common.fileio import atomic_write_json
from src.common.images import load_image, save_image
from src.common.stage import StageContext, run_stage
from src.common.training import last_checkpoint, make_trainer

CLASSIFIER_FILE = "classifier.pt"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
WRONG_FILE = "wrong_val.png"


def labelled_items(params: Any, side: str) -> tuple[list[LabelledItem], str]:
    """The labelled items named by the config and a short description of where they came from."""
    if params.folders:
        return items_from_folders(params.folders, side), str(params.folders)
    if not params.pairs:
        raise UserError(
            "cleaner: no labelled data; set cleaner.pairs=DIR (with DIR/labels.csv or "
            "cleaner.labels=FILE) or cleaner.folders=DIR (with good/ and bad/)"
        )
    labels = params.labels or str(Path(params.pairs) / "labels.csv")
    if not Path(labels).is_file():
        raise UserError(
            f"cleaner: no labels yet ({labels} does not exist); the chain stops here until you "
            f"label the pairs{labelling_step(params)}"
        )
    return items_from_labels(params.pairs, labels, side), str(labels)


def labelling_step(params: Any) -> str:
    """``: <the labelling command>, then ...``: what to do when labels are missing or too few."""
    if params.folders or not params.pairs:
        return ""
    labels = params.labels or str(Path(params.pairs) / "labels.csv")
    return (
        f": python -m src.cleaner.label pairs={params.pairs} labels={labels} "
        f"(about {max(int(params.min_per_class), 300)} of each class; keys g good, b bad), then "
        "run the same command again"
    )


@torch.no_grad()
def predict(module: GoodBadClassifier, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """P(good) and the targets for every item of ``loader``, in order."""
    module.eval()
    probs, targets = [], []
    for batch in loader:
        probs.append(torch.sigmoid(module(batch["image"].to(module.device))).cpu())
        targets.append(batch["target"].long())
    return torch.cat(probs), torch.cat(targets)


def val_metrics(
    probs: torch.Tensor, targets: torch.Tensor, choice: ThresholdChoice
) -> dict[str, Any]:
    """Accuracy, precision and recall of "good" at the threshold (and accuracy at 0.5),
    ROC-AUC and the confusion matrix [[bad->bad, bad->good], [good->bad, good->good]]."""
    t = choice.threshold
    return {
        "threshold": t,
        "target_precision": choice.target_precision,
        "target_precision_reached": choice.reached,
        "accuracy": float(binary_accuracy(probs, targets, threshold=t)),
        "accuracy_at_0.5": float(binary_accuracy(probs, targets, threshold=0.5)),
        "precision": float(binary_precision(probs, targets, threshold=t)),
        "recall": float(binary_recall(probs, targets, threshold=t)),
        "auroc": float(binary_auroc(probs, targets)),
        "confusion_matrix": binary_confusion_matrix(probs, targets, threshold=t).tolist(),
        "val_size": len(targets),
        "val_good": int(targets.sum()),
    }


def most_confidently_wrong(
    items: list[LabelledItem], probs: torch.Tensor, threshold: float, count: int
) -> list[tuple[LabelledItem, float]]:
    """Val items on the wrong side of ``threshold``, the most confident first."""
    wrong = [
        (item, float(p))
        for item, p in zip(items, probs.tolist(), strict=True)
        if (p >= threshold) != item.good
    ]
    wrong.sort(key=lambda pair: pair[1] if not pair[0].good else 1 - pair[1], reverse=True)
    return wrong[:count]


def write_pictures(
    ctx: StageContext, logger: Any, metrics: dict[str, Any], wrong: list[tuple[LabelledItem, float]]
) -> list[str]:
    """The confusion matrix and the most confidently wrong val images, as PNG and TensorBoard."""
    matrix = confusion_matrix_picture(metrics["confusion_matrix"], metrics["threshold"])
    save_image(matrix, ctx.out_dir / CONFUSION_FILE)
    log_picture(logger, tags.samples("confusion_matrix"), matrix)
    written = [CONFUSION_FILE]
    (ctx.out_dir / WRONG_FILE).unlink(missing_ok=True)
    if wrong:
        sheet = captioned_sheet(
            [[load_image(path) for path in item.paths] for item, _ in wrong],
            [f"{item.name} {'good' if item.good else 'bad'} p={p:.2f}" for item, p in wrong],
        )
        save_image(sheet, ctx.out_dir / WRONG_FILE)
        log_picture(logger, tags.samples("wrong_val"), sheet)
        written.append(WRONG_FILE)
    return written


def train(ctx: StageContext) -> list[str]:
    """The stage function: train, choose the threshold, write classifier.pt and the pictures."""
    p = ctx.params
    side = check_side(str(p.side))
    items, source = labelled_items(p, side)
    if p.validate:
        items = drop_bad_files(items)
    check_classes(items, source, int(p.min_per_class), labelling_step(p))
    train_items, val_items = stratified_split(items, float(p.val_fraction), int(ctx.cfg.seed))

    pretrained_file = p.backbone.pretrained_file or None
    module = GoodBadClassifier(
        backbone=str(p.backbone.name),
        pretrained_file=pretrained_file,
        backbone_kwargs=dict(p.backbone.kwargs or {}),
        lr=float(p.lr),
        weight_decay=float(p.weight_decay),
    )
    mean, std = normalisation(module.net, pretrained=pretrained_file is not None)
    data = CleanerDataModule(
        train_items,
        val_items,
        image_size=int(p.image_size),
        batch_size=int(p.batch_size),
        num_workers=int(p.num_workers),
        mean=mean,
        std=std,
        augment=dict(p.augment),
        seed=int(ctx.cfg.seed),
    )
    resume_from = last_checkpoint(ctx.out_dir) if ctx.resume else None
    if resume_from is None:
        shutil.rmtree(ctx.out_dir / "checkpoints", ignore_errors=True)
    trainer = make_trainer(ctx.cfg)
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)

    probs, targets = predict(module, data.val_dataloader())
    choice = choose_threshold(probs, targets, float(p.target_precision))
    metrics = {
        **val_metrics(probs, targets, choice),
        "train_size": len(train_items),
        "backbone": str(p.backbone.name),
        "side": side,
    }
    wrong = most_confidently_wrong(val_items, probs, choice.threshold, int(p.wrong_shown))
    outputs = write_pictures(ctx, trainer.logger, metrics, wrong)
    save_classifier(
        ctx.out_dir / CLASSIFIER_FILE,
        module,
        image_size=int(p.image_size),
        side=side,
        mean=mean,
        std=std,
        threshold=choice,
        metrics=metrics,
    )
    atomic_write_json(ctx.out_dir / METRICS_FILE, metrics)
    print(
        f"cleaner: val accuracy {metrics['accuracy']:.3f} "
        f"(at 0.5: {metrics['accuracy_at_0.5']:.3f})"
        f", AUROC {metrics['auroc']:.3f}, precision {metrics['precision']:.3f}, recall "
        f"{metrics['recall']:.3f} at threshold {choice.threshold:.3f} on {len(val_items)} val"
    )
    return [CLASSIFIER_FILE, METRICS_FILE, *outputs]


if __name__ == "__main__":
    run_stage("cleaner", train)
