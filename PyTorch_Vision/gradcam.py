"""GradCAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017). For 32x32 inputs ResNet18's layer4 gives a 4x4 map (coarse, closest to the decision), layer3 an 8x8."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import eval_mode


class LayerOutput:
    """Captures a layer's output on forward through a hook that leaving the `with` block removes."""

    def __init__(self, layer: nn.Module):
        self.output: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._save)

    def _save(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self.output = output

    def __enter__(self) -> "LayerOutput":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


class BaseCAM:
    """A CAM method: `target_layer`'s channels weighted, summed, ReLU, upsampled, scaled. Subclasses define
    `channel_weights(activations, gradients) -> (N,K)`."""

    def __init__(self, model: nn.Module, target_layer: nn.Module):
        if not any(m is target_layer for m in model.modules()):
            raise ValueError("target_layer is not a module of model (e.g. pass model.layer4[-1])")
        self.model, self.target_layer = model, target_layer

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """images (N,3,H,W) normalized, class_idx (N,) long -> maps (N,H,W) in [0,1] for those classes."""
        if images.ndim != 4 or class_idx.shape != (images.shape[0],):
            raise ValueError(f"need images (N,C,H,W) and class_idx (N,), got {tuple(images.shape)} and "
                             f"{tuple(class_idx.shape)}")
        device = next(self.model.parameters()).device
        images, class_idx = images.to(device).float(), class_idx.to(device).long()
        with eval_mode(self.model), LayerOutput(self.target_layer) as captured, torch.enable_grad():
            logits = self.model(images)
            if captured.output is None or not captured.output.requires_grad:
                raise RuntimeError("target_layer produced no output that depends on trainable weights")
            score = logits.gather(1, class_idx[:, None]).sum()
            gradients, = torch.autograd.grad(score, captured.output)  # d score / d activations, nothing stored
            activations, gradients = captured.output.detach().float(), gradients.float()
        weights = self.channel_weights(activations, gradients)
        cam = F.relu((weights[:, :, None, None] * activations).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return scale_per_map(cam)


class GradCAM(BaseCAM):
    """GradCAM: each channel weighted by its gradient averaged over the map."""

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


def scale_per_map(maps: torch.Tensor) -> torch.Tensor:
    """(N,H,W) -> each map min-max scaled to [0,1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def overlay(image: torch.Tensor | np.ndarray, cam: torch.Tensor | np.ndarray, alpha: float = 0.5,
            colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap onto an un-normalized image: image (3,H,W) or (H,W,3) in [0,1] (or uint8),
    cam (H,W) in [0,1] -> (H,W,3) float array in [0,1]."""
    from matplotlib import colormaps

    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    img = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img.astype(np.float32)
    heat = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"cam {heat.shape} and image {img.shape[:2]} differ in size")
    coloured = colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    return np.clip((1 - alpha) * img + alpha * coloured, 0, 1)
