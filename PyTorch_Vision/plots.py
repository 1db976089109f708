"""The figures: each function returns a matplotlib Figure (no pyplot state), and saves it as PNG when given a
path."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .evaluation import confusion_matrix, per_class_accuracy
from .gradcam import BaseCAM, overlay


def save_figure(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save as PNG when a path is given (creating its folder) and return the figure."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return fig


def _note(text: str) -> Figure:
    """A small figure holding only `text`: what a gallery shows when it has nothing to show."""
    fig = Figure(figsize=(5, 1), dpi=100)
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _as_hwc(image) -> np.ndarray:
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    return img


def show_images(images: Sequence, nrows: int, ncols: int, titles: Sequence[str] | None = None,
                suptitle: str | None = None, size: float = 1.6, path=None) -> Figure:
    """A grid of images ((3,H,W) or (H,W,3); float in [0,1] or uint8) with optional titles."""
    fig = Figure(figsize=(ncols * size, nrows * size * (1.25 if titles else 1)), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(_as_hwc(images[i]), interpolation="nearest")
            if titles:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def plot_history(history, path=None) -> Figure:
    """Loss and accuracy per epoch, train vs test, side by side."""
    fig = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, label in ((ax_loss, "loss", "loss (cross-entropy)"), (ax_acc, "acc", "accuracy (%)")):
        ax.plot(history.epoch, getattr(history, f"train_{key}"), "o-", label="train (augmented)")
        ax.plot(history.epoch, getattr(history, f"test_{key}"), "s-", label="test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    best = int(np.argmax(history.test_acc))
    ax_acc.annotate(f"best {history.test_acc[best]:.2f}%", (history.epoch[best], history.test_acc[best]),
                    textcoords="offset points", xytext=(-90, -30), arrowprops={"arrowstyle": "->"})
    ax_loss.set_title("Loss per epoch")
    ax_acc.set_title("Accuracy per epoch")
    return save_figure(fig, path)


def plot_misclassified(images, labels, predicted, confidence, classes: Sequence[str], ncols: int = 5,
                       path=None) -> Figure:
    """Gallery of misclassified images titled with true class, predicted class and confidence."""
    titles = [f"true: {classes[t]}\npred: {classes[p]} ({100 * c:.0f}%)"
              for t, p, c in zip(labels.tolist(), predicted.tolist(), confidence.tolist())]
    if len(images) == 0:
        return save_figure(_note("No misclassified test images."), path)
    nrows = -(-len(images) // ncols)
    return show_images(images, nrows, ncols, titles, suptitle="Misclassified test images", size=2.0, path=path)


def plot_gradcam(cam: BaseCAM, inputs: torch.Tensor, images, labels: torch.Tensor, predicted: torch.Tensor,
                 classes: Sequence[str], layer_name: str, path=None, scores: Sequence[float] | None = None) -> Figure:
    """A row per example: the image (`images`, the `inputs` unnormalized), the CAM of the predicted and of the true
    class; `scores` (e.g. deletion gaps) titled on the predicted one."""
    n = len(inputs)
    if n == 0:
        return save_figure(_note("No misclassified test images: nothing to explain."), path)
    maps_pred, maps_true = cam(inputs, predicted), cam(inputs, labels)
    fig = Figure(figsize=(6.6, 2.3 * n), dpi=100, layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        img = _as_hwc(images[i])
        panels = ((img, f"true: {classes[labels[i]]}"),
                  (overlay(img, maps_pred[i]), f"CAM pred: {classes[predicted[i]]}"
                   + (f"\ndeletion gap {scores[i]:.2f}" if scores is not None else "")),
                  (overlay(img, maps_true[i]), f"CAM true: {classes[labels[i]]}"))
        for ax, (picture, title) in zip(axes[i], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.suptitle(f"GradCAM at {layer_name} (red = evidence for the class)")
    return save_figure(fig, path)


def plot_confusion(labels: torch.Tensor, predicted: torch.Tensor, classes: Sequence[str], path=None) -> Figure:
    """Confusion matrix (rows true, columns predicted) with per-class accuracy on the row labels."""
    k = len(classes)
    matrix = confusion_matrix(labels, predicted, k).numpy()
    acc = per_class_accuracy(labels, predicted, k).numpy()
    fig = Figure(figsize=(8, 7), dpi=100, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8, label="test images")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{c} ({a:.1f}%)" for c, a in zip(classes, acc)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (per-class accuracy)")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_title(f"Confusion matrix, overall accuracy {100 * np.trace(matrix) / matrix.sum():.2f}%")
    return save_figure(fig, path)


def plot_deletion_curves(results, path=None) -> Figure:
    """Mean deletion curves per CAM layer (faithfulness.measure_layers) against erasing in random order: the
    further a layer's curve falls below the random one, the more its heatmaps point at what the model uses."""
    fig = Figure(figsize=(6.5, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    fractions = 100 * results[0].curves.fractions
    for r in results:
        ax.plot(fractions, r.curves.cam.mean(0), "o-", ms=3,
                label=f"GradCAM {r.layer} ({r.map_size}x{r.map_size}): gap {r.deletion_gap:.3f}")
    ax.plot(fractions, results[0].curves.random.mean(0), "k--", label="random order")
    ax.set_xlabel("pixels erased, most important first (%)")
    ax.set_ylabel("probability of the predicted class")
    ax.set_title(f"Deletion curves, mean over {len(results[0].curves.cam)} test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
