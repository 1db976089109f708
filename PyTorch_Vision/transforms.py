"""Augmentations: albumentations pipelines (the reference definition, used by the DataLoader path) and the
same distribution on whole batches of tensors (what training uses on CUDA and the CPU: no per-image work, no
workers).

Recipe: pad 4 px with the mean colour, random 32x32 crop (all 81 offsets), horizontal flip,
one 16x16 CutOut hole (DeVries & Taylor, 2017) filled with the mean colour, normalize. Variants for the recipe
search (`Augmentation`): the hole in a share of the images only, the hole's centre anywhere in the image with
the hole clipped at the border (as DeVries & Taylor's code does), reflected instead of mean-coloured padding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI on import otherwise

import albumentations as A
import cv2
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2

from .settings import check_settings, setting, share, switch

PAD = 4
HOLE = 16
PADDINGS = ("mean", "reflect")


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation's switches, checked once when made; the defaults are the recipe. A new switch is
    a field here (TrainConfig, the command line and the notebook's overrides take it from here) and its use below."""

    flip: bool = setting(True, "horizontal flip of half of the images", switch)
    cutout: bool = setting(True, "the 16x16 CutOut hole at all (off: an ablation, not the recipe)", switch)
    cutout_p: float = setting(0.5, "share of the images that get the hole (0.5: half, the reference's p; 1: all)",
                              share)
    cutout_anywhere: bool = setting(False, "hole centre anywhere, clipped at the border (DeVries & Taylor's "
                                    "Cutout); else wholly inside the image", switch)
    padding: str = setting("mean", "the crop's 4-px border: the mean colour or the image reflected",
                           choices=PADDINGS)

    def __post_init__(self):
        check_settings(self)


class CutOutAnywhere(A.ImageOnlyTransform):
    """One size x size hole whose centre is uniform over the image, clipped at the border: DeVries & Taylor's
    Cutout (2017, their code's `Cutout` class). albumentations' CoarseDropout keeps holes wholly inside."""

    def __init__(self, size: int = HOLE, fill: Sequence[int] = (0, 0, 0), p: float = 1.0):
        super().__init__(p=p)
        self.size, self.fill = size, tuple(fill)

    def get_params_dependent_on_data(self, params, data):
        h, w = params["shape"][:2]
        cy, cx = self.py_random.randrange(h), self.py_random.randrange(w)
        half = self.size // 2
        return {"box": (max(cy - half, 0), min(cy + half, h), max(cx - half, 0), min(cx + half, w))}

    def apply(self, img, box, **params):
        y0, y1, x0, x1 = box
        out = img.copy()
        out[y0:y1, x0:x1] = self.fill
        return out

    def get_transform_init_args_names(self):
        return ("size", "fill")


def mean_colour(mean: Sequence[float]) -> tuple[int, ...]:
    """Per-channel mean in 0..1 -> the uint8 RGB colour used to fill padding and holes."""
    return tuple(int(round(m * 255)) for m in mean)


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if not all(0 <= m <= 1 for m in mean) or not all(0 < s <= 1 for s in std):
        raise ValueError(f"mean/std are per-channel values in 0..1 (albumentations' convention), got {mean}, {std}")


def train_transforms(mean: Sequence[float], std: Sequence[float],
                     augmentation: Augmentation = Augmentation()) -> A.Compose:
    """Pad+crop, optional flip, one 16x16 CutOut (variants: see `Augmentation`), normalize: HxWx3 uint8 `image=`
    -> 3x32x32 float tensor."""
    _check_stats(mean, std)
    aug, fill = augmentation, mean_colour(mean)
    border = {"border_mode": cv2.BORDER_REFLECT_101} if aug.padding == "reflect" else \
        {"border_mode": cv2.BORDER_CONSTANT, "fill": fill}
    steps = [A.Pad(padding=PAD, **border), A.RandomCrop(height=32, width=32)]
    if aug.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if aug.cutout and aug.cutout_anywhere:
        steps.append(CutOutAnywhere(HOLE, fill, p=aug.cutout_p))
    elif aug.cutout:
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(HOLE, HOLE),
                                     hole_width_range=(HOLE, HOLE), fill=fill, p=aug.cutout_p))
    steps += [
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]
    return A.Compose(steps, strict=True)


def test_transforms(mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Normalize only: HxWx3 uint8 `image=` -> 3xHxW float tensor."""
    _check_stats(mean, std)
    return A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()],
                     strict=True)


# ---- the same augmentations on whole batches: (N,3,H,W) uint8 tensors on any device ----

class BatchTransforms:
    """The train_transforms recipe (`train`) and test_transforms (`normalize`) on whole (N,3,H,W) uint8 batches
    on `device`. The constant tensors (fill colour, mean, std, pixel coordinates) are made here once, so a batch
    costs only its random draws and a few ops: no host-to-device copies. Draws in the order crop, flip, hole."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str,
                 augmentation: Augmentation = Augmentation(), size: tuple[int, int] = (32, 32)):
        _check_stats(mean, std)
        device = torch.device(device)
        self.augmentation = augmentation
        self.fill = torch.tensor(mean_colour(mean), dtype=torch.uint8, device=device).view(1, -1, 1, 1)
        self.mean = torch.tensor(tuple(mean), device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(tuple(std), device=device).view(1, -1, 1, 1)
        self.ys, self.xs = torch.arange(size[0], device=device), torch.arange(size[1], device=device)

    def train(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N,3,H,W) -> augmented, normalized float32 (N,3,H,W)."""
        aug = self.augmentation
        images = self.crop(images, reflect=aug.padding == "reflect", generator=generator)
        if aug.flip:
            images = self.flip_lr(images, generator)
        if aug.cutout:
            images = self.cutout(images, generator=generator, p=aug.cutout_p, anywhere=aug.cutout_anywhere)
        return self.normalize(images)

    def crop(self, images: torch.Tensor, padding: int = PAD, reflect: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Pad each image by `padding` with the mean colour (or, `reflect`, the image reflected at its edges, as
        cv2's BORDER_REFLECT_101) and cut a random HxW window: every offset equally likely."""
        n, c, h, w = images.shape
        if reflect:
            padded = F.pad(images, (padding,) * 4, mode="reflect")
        else:
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

    def cutout(self, images: torch.Tensor, size: int = HOLE, generator: torch.Generator | None = None,
               p: float = 1.0, anywhere: bool = False) -> torch.Tensor:
        """Fill one size x size square with the mean colour in a share `p` of the images; the square lies wholly
        inside, placed uniformly, or (anywhere) has its centre uniform over the image and is clipped at the border."""
        n, c, h, w = images.shape
        if anywhere:
            y0 = torch.randint(0, h, (n, 1, 1, 1), device=images.device, generator=generator) - size // 2
            x0 = torch.randint(0, w, (n, 1, 1, 1), device=images.device, generator=generator) - size // 2
        else:
            y0 = torch.randint(0, h - size + 1, (n, 1, 1, 1), device=images.device, generator=generator)
            x0 = torch.randint(0, w - size + 1, (n, 1, 1, 1), device=images.device, generator=generator)
        ys, xs = self.ys.view(1, 1, h, 1), self.xs.view(1, 1, 1, w)
        hole = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
        if p < 1:
            hole &= (torch.rand(n, device=images.device, generator=generator) < p).view(n, 1, 1, 1)
        return torch.where(hole, self.fill, images)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) -> float32 (N,3,H,W), (x/255 - mean) / std."""
        return (images.float() / 255 - self.mean) / self.std


def batch_normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32 (N,3,H,W), (x/255 - mean) / std; for one batch (a loop keeps a BatchTransforms)."""
    return BatchTransforms(mean, std, images.device, size=images.shape[-2:]).normalize(images)


def batch_train_augment(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                        augmentation: Augmentation = Augmentation(),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The whole train_transforms recipe on one uint8 (N,3,H,W) batch -> normalized float (N,3,H,W); a loop keeps
    a BatchTransforms instead."""
    return BatchTransforms(mean, std, images.device, augmentation, images.shape[-2:]).train(images, generator)
