"""The one evaluation of a model over a data set, `predict`, behind every test figure (each epoch's, the report's,
test-time augmentation), and what its numbers make: mistakes, the confusion matrix, per-class accuracy."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .utils import autocast


@contextlib.contextmanager
def train_mode(model: nn.Module, training: bool = True):
    """`model` in train mode (eval mode for training=False) inside the block, as it was after, even on an error."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def eval_mode(model: nn.Module):
    return train_mode(model, False)


@dataclass
class Predictions:
    """Outputs over a data set, in its order, on the CPU: the softmax `confidence` of each `predicted` class, the
    plain images' mean `loss`, and the normalized `images` when asked for."""

    labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    loss: float
    images: torch.Tensor | None = None

    @property
    def accuracy(self) -> float:
        return 100 * (self.predicted == self.labels).float().mean().item()


TTA = ("none", "flip", "flip-shift")


def _check_tta(tta: str) -> None:
    if tta not in TTA:
        raise ValueError(f"tta must be one of {', '.join(TTA)}, got {tta!r}")


def tta_views(x: torch.Tensor, tta: str = "none") -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs that test-time augmentation averages, the images first. "flip": they and their mirror
    images, half each; "flip-shift": airbench's, that pair at half and each moved 1 px both ways at an eighth."""
    _check_tta(tta)
    if tta == "none":
        return [(x, 1.0)]
    views = [(x, 0.5), (x.flip(-1), 0.5)]
    if tta == "flip-shift":
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = (padded[..., :-2, :-2], padded[..., 2:, 2:])
        views = [(v, w / 2) for v, w in views] + [(v, 1 / 8) for s in shifted for v in (s, s.flip(-1))]
    return views


@torch.no_grad()
def predict(model: nn.Module, batches, precision: str = "fp32", channels_last: bool = False,
            criterion: nn.Module | None = None, tta: str = "none", keep_images: bool = True) -> Predictions:
    """`model` in eval mode over `batches` in `precision`, averaging the softmax over the `tta` views; the inputs
    kept where `keep_images` (for galleries). The mode is restored."""
    criterion = criterion or nn.CrossEntropyLoss()
    _check_tta(tta)
    labels, predicted, confidence, images = [], [], [], []
    loss_sum, seen = 0.0, 0
    with eval_mode(model):
        for x, y in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(x.device, precision):
                (_, own_weight), *others = tta_views(x, tta)
                logits = model(x).float()
                probs = own_weight * logits.softmax(1)
                for view, weight in others:
                    probs += weight * model(view).float().softmax(1)
            loss_sum += criterion(logits, y).item() * len(y)
            seen += len(y)
            conf, pred = probs.max(1)
            labels.append(y.cpu()), predicted.append(pred.cpu()), confidence.append(conf.cpu())
            if keep_images:
                images.append(x.float().cpu().contiguous())
    if not seen:
        raise ValueError("no batches to evaluate: the data set is empty")
    return Predictions(torch.cat(labels), torch.cat(predicted), torch.cat(confidence), loss_sum / seen,
                       torch.cat(images) if keep_images else None)


def misclassified(preds: Predictions, n: int = 10) -> torch.Tensor:
    """Indices of up to n wrong predictions, most confident first (the most instructive mistakes)."""
    wrong = (preds.predicted != preds.labels).nonzero().flatten()
    order = preds.confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:n]]


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    idx = labels.long() * num_classes + predicted.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes,) accuracy in percent for each true class (NaN where a class has no examples)."""
    matrix = confusion_matrix(labels, predicted, num_classes).float()
    return 100 * matrix.diag() / matrix.sum(1)
