"""Can we trust a heatmap? Deletion curves (Petsiuk et al., 2018, "RISE"): erase the pixels a CAM ranks first and
watch the class probability fall, against erasing in random order; erased pixels imputed from the kept ones ("blur",
after ROAD, Rong et al., 2022) or set to the mean colour. And the model-randomisation check (Adebayo et al., 2018):
a heatmap that barely changes when the weights are re-drawn explains the architecture, not what was learned."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import eval_mode
from .gradcam import BaseCAM, GradCAM, LayerOutput
from .utils import autocast, markdown_table

FILLS = ("mean", "blur")


@dataclass
class DeletionCurves:
    """fractions (K,) of pixels erased, from 0 to 1; cam and random (N,K): the explained class's softmax
    probability after erasing that share of pixels in CAM order and in random order."""

    fractions: torch.Tensor
    cam: torch.Tensor
    random: torch.Tensor

    @property
    def deletion_gap(self) -> torch.Tensor:
        """(N,) area under the random curve minus under the CAM's, in [-1, 1]: positive where the pixels the CAM
        ranks first matter more to the model than random ones."""
        return torch.trapezoid(self.random - self.cam, self.fractions, dim=1)


def impute(images: torch.Tensor, keep: torch.Tensor, fill: str = "mean", size: int = 7) -> torch.Tensor:
    """A copy of `images` with the pixels not in `keep` replaced: "mean" by the mean colour (0 once normalized),
    "blur" by the average of the kept pixels in a size x size window (the mean where none is kept)."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    keep = keep.to(images.dtype)
    if fill == "mean":
        return images * keep
    kernel = torch.ones(1, 1, size, size, dtype=images.dtype, device=images.device)
    n, c, h, w = images.shape
    summed = F.conv2d((images * keep).reshape(n * c, 1, h, w), kernel, padding=size // 2).reshape(n, c, h, w)
    count = F.conv2d(keep, kernel, padding=size // 2)
    filled = torch.where(count > 0, summed / count.clamp_min(1), torch.zeros_like(summed))
    return images * keep + filled * (1 - keep)


def cam_order(cams: torch.Tensor) -> torch.Tensor:
    """(N,H,W) heatmaps -> (N,H*W) pixel indices, the hottest first (ties in pixel order)."""
    return cams.flatten(1).argsort(dim=1, descending=True, stable=True)


def random_order(n: int, pixels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,pixels) a random permutation of the pixel indices per image, drawn on the CPU from `generator`."""
    return torch.stack([torch.randperm(pixels, generator=generator) for _ in range(n)])


@torch.no_grad()
def erasure_curve(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, order: torch.Tensor,
                  steps: int = 20, fill: str = "mean", precision: str = "fp32",
                  batch_size: int = 256) -> torch.Tensor:
    """(N, steps+1) probability of `classes` after erasing 0, 1/steps, ..., all of the pixels in `order`
    (N, H*W), in eval mode and `precision`."""
    n, _, h, w = images.shape
    device = next(model.parameters()).device
    images, classes, order = images.to(device).float(), classes.to(device).long(), order.to(device)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=device).expand(n, -1))
    probs = torch.empty(n, steps + 1)
    with eval_mode(model):
        for j in range(steps + 1):
            keep = (rank >= round(j / steps * h * w)).view(n, 1, h, w)  # the first round(share*HW) in order go
            erased = impute(images, keep, fill)
            for i in range(0, n, batch_size):
                with autocast(device, precision):
                    logits = model(erased[i:i + batch_size])
                p = logits.float().softmax(1)
                probs[i:i + batch_size, j] = p.gather(1, classes[i:i + batch_size, None])[:, 0].cpu()
    return probs


def deletion_curves(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, cams: torch.Tensor,
                    steps: int = 20, fill: str = "mean", generator: torch.Generator | None = None,
                    batch_size: int = 256, precision: str = "fp32",
                    random: torch.Tensor | None = None) -> DeletionCurves:
    """Deletion curves of `cams` (N,H,W): pixels erased in their order and in a random one drawn from `generator`
    (unless `random` gives that curve already: it is the same for every heatmap)."""
    n, _, h, w = images.shape
    if cams.shape != (n, h, w) or classes.shape != (n,):
        raise ValueError(f"need cams (N,H,W) and classes (N,) for images {tuple(images.shape)}, got "
                         f"{tuple(cams.shape)} and {tuple(classes.shape)}")
    if random is None:
        random = erasure_curve(model, images, classes, random_order(n, h * w, generator), steps, fill, precision,
                               batch_size)
    cam = erasure_curve(model, images, classes, cam_order(cams), steps, fill, precision, batch_size)
    return DeletionCurves(torch.linspace(0, 1, steps + 1), cam, random)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties sharing the mean of their ranks (as Spearman's correlation needs)."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    counts = np.diff(starts)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(starts[:-1] + (counts - 1) / 2, counts)
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,...) and (N,...) -> (N,) Spearman rank correlation of each pair of maps over their pixels; NaN where a
    map is constant (its ranks say nothing)."""
    out = []
    for x, y in zip(a.flatten(1).cpu().numpy(), b.flatten(1).cpu().numpy()):
        rx, ry = average_ranks(x), average_ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denominator = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
        out.append((rx * ry).sum() / denominator if denominator > 0 else np.nan)
    return torch.tensor(out, dtype=torch.float64)


def reinitialised(model: nn.Module, seed: int = 12345) -> nn.Module:
    """A copy of `model` re-drawn by each layer's own initialiser (Adebayo et al.'s full randomisation), on the CPU
    from a seed of its own, leaving every generator (a GPU's too) as it was."""
    fresh = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # torch.manual_seed would reseed every GPU's too
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return fresh


def randomisation_check(model: nn.Module, layer: str, images: torch.Tensor, classes: torch.Tensor,
                        cam_class: type[BaseCAM] = GradCAM, seed: int = 12345,
                        trained: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) rank correlation between the CAM at `layer` of `model` (`trained`, where computed already) and of its
    re-initialised copy. High: the heatmap ignores training."""
    if trained is None:
        trained = cam_class(model, model.get_submodule(layer))(images, classes)
    fresh = reinitialised(model, seed).to(next(model.parameters()).device)
    return rank_correlation(trained, cam_class(fresh, fresh.get_submodule(layer))(images, classes))


@dataclass
class LayerFaithfulness:
    """One layer's checks: deletion curves and mean gap, the random heatmaps' gap (the control, about 0), and the
    median rank correlation with a re-initialised model's CAM (lower is better)."""

    layer: str
    map_size: int
    curves: DeletionCurves
    deletion_gap: float
    random_cam_gap: float
    randomised_correlation: float


LAYERS = ("layer4.1", "layer3.1", "layer2.1")


def measure_layers(model: nn.Module, images: torch.Tensor, layers: tuple[str, ...] = LAYERS, steps: int = 20,
                   fill: str = "blur", seed: int = 0, precision: str = "fp32") -> list[LayerFaithfulness]:
    """The heatmap checks for the predicted classes at each of `layers`, under one fill fixed in advance (the blur,
    which ROAD finds leaks least of the erased shape); one random order and one set of random heatmaps for all."""
    device = next(model.parameters()).device
    images = images.to(device).float()
    n, _, h, w = images.shape
    with eval_mode(model), torch.no_grad():
        predicted = model(images).argmax(1)
    random = erasure_curve(model, images, predicted, random_order(n, h * w, torch.Generator().manual_seed(seed)),
                           steps, fill, precision)
    noise = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed + 1))
    control = deletion_curves(model, images, predicted, noise, steps, fill, precision=precision, random=random)
    results = []
    for layer in layers:
        target = model.get_submodule(layer)
        with eval_mode(model), torch.no_grad(), LayerOutput(target) as out:
            model(images[:1])
        cams = GradCAM(model, target)(images, predicted)
        correlations = randomisation_check(model, layer, images, predicted, trained=cams)
        defined = correlations[~correlations.isnan()]  # a constant heatmap has no ranking
        curves = deletion_curves(model, images, predicted, cams, steps, fill, precision=precision, random=random)
        results.append(LayerFaithfulness(layer, out.output.shape[-1], curves, curves.deletion_gap.mean().item(),
                                         control.deletion_gap.mean().item(),
                                         defined.median().item() if len(defined) else float("nan")))
    return results


def faithfulness_markdown(results: list[LayerFaithfulness]) -> str:
    """The per-layer table: map size, deletion gap (higher: more faithful), the random-heatmap control, and the
    correlation with a re-initialised model's heatmap (lower: more dependent on training)."""
    return markdown_table(
        ("layer", "map", "deletion gap", "random heatmap gap", "rank correlation with re-initialised model"),
        [(r.layer, f"{r.map_size}x{r.map_size}", f"{r.deletion_gap:.3f}", f"{r.random_cam_gap:.3f}",
          f"{r.randomised_correlation:.2f}") for r in results])


def best_layer(results: list[LayerFaithfulness]) -> LayerFaithfulness:
    """The layer whose heatmaps have the largest mean deletion gap."""
    return max(results, key=lambda r: r.deletion_gap)
