"""What a finished run shows, made one way for the command line and the notebook: the loss and accuracy curves,
the most confident mistakes, GradCAM on them, the confusion matrix and the headline figures."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from .config import TrainConfig
from .batches import evaluation_batches, training_set_batches
from .data import CIFAR10Data
from .evaluation import Predictions, misclassified, predict
from .faithfulness import deletion_curves
from .gradcam import GradCAM
from .history import History
from .plots import plot_confusion, plot_gradcam, plot_history, plot_misclassified
from .precision import choose_precision
from .run_folder import recorded_precision
from .train import make_criterion
from .utils import code_version, default_device, denormalize, device_name, markdown_table


@dataclass
class Report:
    """A run's figures and headline table. `predictions` are the final model's on the test set, evaluated as
    training evaluated every epoch (so its accuracy is the history's last); `flip_tta` and `flip_shift_tta` add
    test-time augmentation (evaluation.tta_views); `train_plain` and `train_hole` are its accuracies (%) on the
    training images unaugmented and with the CutOut hole on each (does it fit what it was trained on?); `wrong`
    indexes the misclassified images shown."""

    predictions: Predictions
    flip_tta: Predictions
    flip_shift_tta: Predictions
    train_plain: float
    train_hole: float
    wrong: torch.Tensor
    curves: Figure
    misclassified: Figure
    gradcam: Figure
    confusion: Figure
    headline: list[tuple[str, str]]

    def headline_markdown(self) -> str:
        return markdown_table(("", ""), self.headline)

    @property
    def summary(self) -> list[tuple[str, str]]:
        """The notebook's name for `headline` until the notebook's next full run."""
        return self.headline


def make_report(model: nn.Module, data: CIFAR10Data, history: History, config: TrainConfig,
                device: torch.device | str | None = None, out_dir: str | os.PathLike | None = None,
                n_wrong: int = 10, cam_layer: str = "layer4.1", cam_scores: bool = False) -> Report:
    """Evaluate `model` (trained by `fit` with `config`) on the test set and draw every figure; with `out_dir`,
    saves them there as PNG (loss_accuracy, misclassified, misclassified_gradcam, confusion_matrix).
    `cam_layer`: the GradCAM target, a submodule name of `model` ("layer4.1" is ResNet18's `layer4[-1]`);
    `cam_scores`: title each predicted-class heatmap with its deletion gap (faithfulness.py)."""
    device = torch.device(device) if device is not None else default_device()
    precision = recorded_precision(history.run, device, config) or choose_precision(device, config.precision)
    out = Path(out_dir) if out_dir is not None else None
    path = (lambda name: out / name) if out is not None else (lambda name: None)
    tests = evaluation_batches(data, config.batch_size, device, config.on_device_data)
    criterion = make_criterion(config)
    preds = predict(model, tests, precision, config.channels_last, criterion)
    flip_tta, flip_shift_tta = (predict(model, tests, precision, config.channels_last, criterion, tta=tta,
                                        keep_images=False) for tta in ("flip", "flip-shift"))
    train_plain, train_hole = (predict(model, training_set_batches(data, config.batch_size, device, hole, config.seed),
                                       precision, config.channels_last, criterion, keep_images=False).accuracy
                               for hole in (False, True))
    wrong = misclassified(preds, n_wrong)
    shown = denormalize(preds.images[wrong], data.mean, data.std)
    return Report(
        preds, flip_tta, flip_shift_tta, train_plain, train_hole, wrong,
        curves=plot_history(history, path("loss_accuracy.png")),
        misclassified=plot_misclassified(shown, preds.labels[wrong], preds.predicted[wrong], preds.confidence[wrong],
                                         data.classes, path=path("misclassified.png")),
        gradcam=gradcam_gallery(model, data, preds, wrong, cam_layer, "mean" if cam_scores else None,
                                config.seed, path("misclassified_gradcam.png")),
        confusion=plot_confusion(preds.labels, preds.predicted, data.classes, path("confusion_matrix.png")),
        headline=history.headline() + [
            ("final model with flip test-time augmentation", f"{flip_tta.accuracy:.2f}%"),
            ("final model with flip + 1-px shift test-time augmentation", f"{flip_shift_tta.accuracy:.2f}%"),
            ("final model on the training images, unaugmented / with the hole on each",
             f"{train_plain:.2f}% / {train_hole:.2f}%"),
            ("device, precision", f"{device_name(device)}, {precision}"),
            ("data", f"{data.source} ({len(data.train_labels):,} train / {len(data.test_labels):,} test)"),
            ("seed, batch size, max LR", f"{config.seed}, {config.batch_size}, {config.max_lr}" + (
                f" (peaked at {peak:.3g}: a warm-up under {config.min_warmup_steps} batches)"
                if (peak := history.run.get("peak_lr", config.max_lr)) < config.max_lr else "")),
            ("other settings than the recipe's", ", ".join(
                f"{k}={v}" for k, v in asdict(config).items()
                if k not in ("seed", "batch_size", "max_lr", "epochs") and v != getattr(TrainConfig(), k)) or "none"),
            ("code", code_version())])


def gradcam_gallery(model: nn.Module, data: CIFAR10Data, predictions: Predictions, shown: torch.Tensor,
                    layer: str = "layer4.1", fill: str | None = None, seed: int = 0,
                    path: str | os.PathLike | None = None) -> Figure:
    """GradCAM at `layer` (a submodule name of `model`; "layer4.1" is ResNet18's `layer4[-1]`) on the test images
    `shown` indexes in `predictions`, for the predicted and the true class; with `fill` ("mean" or "blur"), each
    predicted-class heatmap is titled with its deletion gap under that fill (faithfulness.py)."""
    inputs, labels, predicted = predictions.images[shown], predictions.labels[shown], predictions.predicted[shown]
    cam = GradCAM(model, model.get_submodule(layer))
    scores = None
    if fill is not None and len(shown):
        curves = deletion_curves(model, inputs, predicted, cam(inputs, predicted), fill=fill,
                                 generator=torch.Generator().manual_seed(seed))
        scores = curves.deletion_gap.tolist()
    return plot_gradcam(cam, inputs, denormalize(inputs, data.mean, data.std), labels, predicted, data.classes,
                        layer + (f", deletion gaps with the {fill} fill" if fill else ""), path=path, scores=scores)
