"""The augmentation: pad 4 px with the mean colour, random 32x32 crop, horizontal flip, one 16x16 CutOut square
(DeVries & Taylor, 2017) on a fraction `cutout_p` of the images, normalize. As albumentations pipelines (the
reference, for the DataLoader path) and as the same distribution on whole batches of tensors (what training uses)."""
from __future__ import annotations

import os
from typing import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI on import otherwise

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2

from .config import TrainConfig

PAD = 4
CUTOUT = 16


def mean_colour(mean: Sequence[float]) -> tuple[int, ...]:
    """Per-channel mean in 0..1 -> the uint8 RGB colour used to fill padding and CutOut squares."""
    return tuple(int(round(m * 255)) for m in mean)


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if not all(0 <= m <= 1 for m in mean) or not all(0 < s <= 1 for s in std):
        raise ValueError(f"mean/std are per-channel values in 0..1 (albumentations' convention), got {mean}, {std}")


def train_transforms(mean: Sequence[float], std: Sequence[float], config: TrainConfig = TrainConfig()) -> A.Compose:
    """Pad + crop, flip (config.flip), CutOut (on config.cutout_p of the images), normalize: HxWx3 uint8 `image=`
    -> 3x32x32 float tensor."""
    _check_stats(mean, std)
    fill = mean_colour(mean)
    steps = [A.Pad(padding=PAD, border_mode=cv2.BORDER_CONSTANT, fill=fill), A.RandomCrop(height=32, width=32)]
    if config.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if config.cutout_p:
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(CUTOUT, CUTOUT),
                                     hole_width_range=(CUTOUT, CUTOUT), fill=fill, p=config.cutout_p))
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(steps, strict=True)


def test_transforms(mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Normalize only: HxWx3 uint8 `image=` -> 3xHxW float tensor."""
    _check_stats(mean, std)
    return A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()],
                     strict=True)


class BatchTransforms:
    """train_transforms (`train`) and test_transforms (`normalize`) on whole uint8 batches; constant tensors made
    once, so that a batch costs its random draws and a few ops. Draws crop, flip, CutOut in that order."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str,
                 config: TrainConfig = TrainConfig(), size: tuple[int, int] = (32, 32)):
        _check_stats(mean, std)
        device = torch.device(device)
        self.flip, self.cutout_p = config.flip, config.cutout_p
        self.fill = torch.tensor(mean_colour(mean), dtype=torch.uint8, device=device).view(1, -1, 1, 1)
        self.mean = torch.tensor(tuple(mean), device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(tuple(std), device=device).view(1, -1, 1, 1)
        self.ys, self.xs = torch.arange(size[0], device=device), torch.arange(size[1], device=device)

    def train(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N,3,H,W) -> augmented, normalized float32 (N,3,H,W)."""
        images = self.crop(images, generator=generator)
        if self.flip:
            images = self.flip_lr(images, generator)
        if self.cutout_p:
            images = self.cutout(images, generator=generator, p=self.cutout_p)
        return self.normalize(images)

    def crop(self, images: torch.Tensor, padding: int = PAD, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Pad each image by `padding` with the mean colour and cut a random HxW window: every offset equally
        likely. The window's rows are gathered, then its columns."""
        n, c, h, w = images.shape
        padded = images.new_empty(n, c, h + 2 * padding, w + 2 * padding)
        padded[:] = self.fill
        padded[:, :, padding:padding + h, padding:padding + w] = images
        dy = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), device=images.device, generator=generator)
        rows = (dy[:, None] + self.ys)[:, None, :, None].expand(n, c, h, w + 2 * padding)
        cols = (dx[:, None] + self.xs)[:, None, None, :].expand(n, c, h, w)
        return padded.gather(2, rows).gather(3, cols)

    @staticmethod
    def flip_lr(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mirror each image left-right with probability 1/2."""
        flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)

    def cutout(self, images: torch.Tensor, size: int = CUTOUT, generator: torch.Generator | None = None,
               p: float = 1.0) -> torch.Tensor:
        """Fill one size x size square, wholly inside and placed uniformly, with the mean colour in a fraction `p`
        of the images."""
        n, c, h, w = images.shape
        y0 = torch.randint(0, h - size + 1, (n, 1, 1, 1), device=images.device, generator=generator)
        x0 = torch.randint(0, w - size + 1, (n, 1, 1, 1), device=images.device, generator=generator)
        ys, xs = self.ys.view(1, 1, h, 1), self.xs.view(1, 1, 1, w)
        square = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
        if p < 1:
            square &= (torch.rand(n, device=images.device, generator=generator) < p).view(n, 1, 1, 1)
        return torch.where(square, self.fill, images)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) -> float32 (N,3,H,W), (x/255 - mean) / std."""
        return (images.float() / 255 - self.mean) / self.std


def batch_normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """BatchTransforms.normalize for one batch (a loop keeps a BatchTransforms instead)."""
    return BatchTransforms(mean, std, images.device, size=images.shape[-2:]).normalize(images)


def batch_train_augment(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                        config: TrainConfig = TrainConfig(), generator: torch.Generator | None = None) -> torch.Tensor:
    """BatchTransforms.train for one uint8 (N,3,H,W) batch (a loop keeps a BatchTransforms instead)."""
    return BatchTransforms(mean, std, images.device, config, images.shape[-2:]).train(images, generator)
