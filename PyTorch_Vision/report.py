"""What a finished run shows, made one way for the command line and the notebook: the loss and accuracy curves,
the most confident mistakes, GradCAM on them, the confusion matrix and the headline figures; and, before a run,
how long it would take on this machine."""
from __future__ import annotations

import copy
import itertools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from .config import TrainConfig
from .data import CIFAR10Data, evaluation_batches, training_set_batches
from .evaluation import Predictions, misclassified, predict
from .faithfulness import deletion_curves
from .gradcam import GradCAM
from .history import History
from .plots import plot_confusion, plot_gradcam, plot_history, plot_misclassified
from .train import make_criterion, make_trainer, recorded_precision
from .utils import choose_precision, code_version, default_device, denormalize, device_name, markdown_table, \
    precision_text, wait_for


@dataclass
class Report:
    """A run's figures and headline: the final model's test predictions (as every epoch evaluated them), with TTA,
    its accuracy on the training images plain and with CutOut, the mistakes shown and the precision used."""

    predictions: Predictions
    flip_tta: Predictions
    flip_shift_tta: Predictions
    train_plain: float
    train_cutout: float
    wrong: torch.Tensor
    precision: str
    curves: Figure
    misclassified: Figure
    gradcam: Figure
    confusion: Figure
    headline: list[tuple[str, str]]

    def headline_markdown(self) -> str:
        return markdown_table(("", ""), self.headline)


def make_report(model: nn.Module, data: CIFAR10Data, history: History, config: TrainConfig,
                device: torch.device | str | None = None, out_dir: str | os.PathLike | None = None,
                n_wrong: int = 10) -> Report:
    """Evaluate `model` and draw every figure (saved as PNG in `out_dir`); GradCAM at `model.layer4[-1]`."""
    device = torch.device(device) if device is not None else default_device()
    precision, _ = recorded_precision(history.run, device, config) or choose_precision(device, config.precision)
    out = Path(out_dir) if out_dir is not None else None
    path = (lambda name: out / name) if out is not None else (lambda name: None)
    tests = evaluation_batches(data, config.batch_size, device, config.on_device_data)
    criterion = make_criterion(config)
    preds = predict(model, tests, precision, config.channels_last, criterion)
    flip_tta, flip_shift_tta = (predict(model, tests, precision, config.channels_last, criterion, tta=tta,
                                        keep_images=False) for tta in ("flip", "flip-shift"))
    train_plain, train_cutout = (
        predict(model, training_set_batches(data, config.batch_size, device, cutout, config.seed), precision,
                config.channels_last, criterion, keep_images=False).accuracy for cutout in (False, True))
    processes = max([segment.get("processes", 1) for segment in history.run.get("segments", [])], default=1)
    wrong = misclassified(preds, n_wrong)
    shown = denormalize(preds.images[wrong], data.mean, data.std)
    return Report(
        preds, flip_tta, flip_shift_tta, train_plain, train_cutout, wrong, precision,
        curves=plot_history(history, path("loss_accuracy.png")),
        misclassified=plot_misclassified(shown, preds.labels[wrong], preds.predicted[wrong], preds.confidence[wrong],
                                         data.classes, path=path("misclassified.png")),
        gradcam=gradcam_gallery(model, data, preds, wrong, path=path("misclassified_gradcam.png")),
        confusion=plot_confusion(preds.labels, preds.predicted, data.classes, path("confusion_matrix.png")),
        headline=history.headline() + [
            ("final model with flip test-time augmentation", f"{flip_tta.accuracy:.2f}%"),
            ("final model with flip + 1-px shift test-time augmentation", f"{flip_shift_tta.accuracy:.2f}%"),
            ("final model on the training images, unaugmented / with one CutOut square on each",
             f"{train_plain:.2f}% / {train_cutout:.2f}%"),
            ("device, precision", f"{device_name(device)}, {precision_text(precision)}"
             + (f"; trained by up to {processes} processes (torchrun)" if processes > 1 else "")),
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
    """GradCAM at `layer` on the test images `shown`, for the predicted and the true class; with `fill`, each
    predicted-class heatmap titled with its deletion gap under that fill."""
    inputs, labels, predicted = predictions.images[shown], predictions.labels[shown], predictions.predicted[shown]
    cam = GradCAM(model, model.get_submodule(layer))
    scores = None
    if fill is not None and len(shown):
        curves = deletion_curves(model, inputs, predicted, cam(inputs, predicted), fill=fill,
                                 generator=torch.Generator().manual_seed(seed))
        scores = curves.deletion_gap.tolist()
    return plot_gradcam(cam, inputs, denormalize(inputs, data.mean, data.std), labels, predicted, data.classes,
                        layer + (f", deletion gaps with the {fill} fill" if fill else ""), path=path, scores=scores)


def images_per_second(fn, batches, steps: int, warmup: int = 1,
                      device: torch.device | str = "cpu") -> tuple[float, float]:
    """(images/s over `steps` calls of fn(x, y) on `batches`, seconds spent in the `warmup` calls before them).
    Warm-up calls take first-call costs (worker start-up, cuDNN autotuning, compilation) out of the rate."""
    device = torch.device(device)
    it = iter(batches)
    start = time.perf_counter()
    for x, y in itertools.islice(it, warmup):
        fn(x, y)
    wait_for(device)
    warm = time.perf_counter() - start
    start, n = time.perf_counter(), 0
    for x, y in itertools.islice(it, steps):
        fn(x, y)
        n += len(y)
    wait_for(device)
    if n == 0:
        raise ValueError(f"no batch left to time after {warmup} warm-up batches: give more images or fewer steps")
    return n / (time.perf_counter() - start), warm


@dataclass(frozen=True)
class RunEstimate:
    """Measured training and evaluation speed, and what they make of a run of `epochs` over the data."""

    train_images_per_s: float
    eval_images_per_s: float
    n_train: int
    n_test: int
    epochs: int
    n_bn_stats: int = 0  # training images passed forward again for BatchNorm's statistics before each evaluation

    @property
    def epoch_seconds(self) -> float:
        return self.n_train / self.train_images_per_s + (self.n_test + self.n_bn_stats) / self.eval_images_per_s

    @property
    def total_seconds(self) -> float:
        return self.epochs * self.epoch_seconds

    def __str__(self) -> str:
        epochs = f"{self.epochs} epoch{'s' * (self.epochs != 1)}"
        return (f"about {_duration(self.total_seconds)} for {epochs} ({_duration(self.epoch_seconds)} "
                f"per epoch; measured here: {self.train_images_per_s:.0f} img/s training, "
                f"{self.eval_images_per_s:.0f} img/s evaluating)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def estimate_run(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
                 device: torch.device | str | None = None, batch_size: int = 32, steps: int = 2) -> RunEstimate:
    """Time `steps` training and evaluation batches of `batch_size` images (after one untimed each) on a copy of
    `model`, through the pipeline `fit` uses on `device`. The caller's model and the global RNG are untouched."""
    if min(len(data.train_labels), len(data.test_labels)) < (steps + 1) * batch_size:
        raise ValueError(f"timing {steps} + 1 batches of {batch_size} needs that many train and test images; "
                         "pass a smaller batch_size")
    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        trial = copy.deepcopy(model)
        t = make_trainer(trial, data, config, device, batch_size=batch_size)
        t.train_batches.set_epoch(1)
        trial.train()
        train_rate, _ = images_per_second(t.step, t.train_batches, steps, 1, device)
        eval_rate, _ = images_per_second(
            lambda x, y: predict(trial, [(x, y)], t.precision, config.channels_last, t.criterion, keep_images=False),
            t.test_batches, steps, 1, device)
    return RunEstimate(train_rate, eval_rate, len(data.train_labels), len(data.test_labels), config.epochs,
                       min(config.bn_stats_images, len(data.train_labels)))


class GPUNeeded(RuntimeError):
    """Training stopped before it began on a machine without a GPU; in a notebook it shows as its one message."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an exception is shown
        return [str(self)]


def stop_without_gpu(device: torch.device | str, estimate: RunEstimate, train_on_cpu: bool = False) -> None:
    """Raise GPUNeeded on the CPU unless `train_on_cpu`: how long the run would take here, and what to do."""
    if torch.device(device).type != "cpu" or train_on_cpu:
        return
    raise GPUNeeded(f"No GPU in this runtime: training here would take {estimate}. In Colab: Runtime > Change "
                    "runtime type > T4 GPU, then Run all. To train on this CPU anyway, set TRAIN_ON_CPU = True in "
                    "the configuration cell and run it again.")
