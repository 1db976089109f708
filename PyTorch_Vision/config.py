"""The recipe as one dataclass, `TrainConfig`: every setting of a run, checked when it is made."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .precision import PRECISIONS
from .transforms import Augmentation


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. Defaults are the 20-epoch ResNet18 recipe (why these values: docs/RECIPE.md)."""

    epochs: int = 20
    batch_size: int = 128
    max_lr: float = 0.1
    max_momentum: float = 0.95      # SGD momentum, cycled by OneCycle against the LR: max_momentum at the start
    base_momentum: float = 0.85     # and the end, base_momentum at the LR's peak
    weight_decay: float = 5e-4      # not applied to BatchNorm weights or biases
    label_smoothing: float = 0.1
    pct_start: float = 0.25         # share of the steps spent warming up to max_lr
    min_warmup_steps: int = 100     # the LR climbs to max_lr over no fewer batches; shorter runs peak lower
    anneal: str = "cos"             # the LR's shape in both phases: "cos" or "linear"
    div_factor: float = 25.0        # initial lr = max_lr / div_factor
    final_div_factor: float = 1e4   # final lr = initial lr / final_div_factor
    flip: bool = True
    cutout: bool = True             # the 16x16 CutOut hole; off only for ablations
    cutout_p: float = 0.5           # share of the images that get the hole (the reference's p=0.5)
    cutout_anywhere: bool = False   # hole centre anywhere, clipped at the border (DeVries & Taylor); else inside
    padding: str = "mean"           # the crop's 4-px border: "mean" colour or "reflect"
    ema: float = 0.0                # decay per step of an average of the weights used for evaluation; 0: none
    bn_stats_images: int = 2048     # BatchNorm statistics recomputed over this many training images before each
                                    # evaluation; 0: BatchNorm's running averages
    seed: int = 0
    precision: str = "auto"         # "auto" (bf16/fp16 on GPUs by kind, the faster of bf16/fp32 on a CPU), "bf16",
                                    # "fp16" or "fp32"
    channels_last: bool = True
    compile: bool = False           # torch.compile: on an H100 <= 8% faster per step, 22-25 s to compile
    on_device_data: bool | None = None  # data held and augmented as whole batches on the device; None: on CUDA
                                        # and the CPU; False: the albumentations DataLoader

    def __post_init__(self):
        for name, least in (("epochs", 1), ("batch_size", 1), ("min_warmup_steps", 1), ("bn_stats_images", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                what = "a positive integer" if least else "a whole number >= 0"
                raise ValueError(f"{name} must be {what}, got {value!r}")
        if not (isinstance(self.max_lr, (int, float)) and math.isfinite(self.max_lr) and self.max_lr > 0):
            raise ValueError(f"max_lr must be a positive number, got {self.max_lr!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.augmentation()  # checks cutout_p and padding
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {self.anneal!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay per step in [0, 1) (0: no average), got {self.ema!r}")
        if not 0 <= self.base_momentum <= self.max_momentum < 1:
            raise ValueError(f"need 0 <= base_momentum <= max_momentum < 1, got {self.base_momentum}, "
                             f"{self.max_momentum}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or not 0 < self.pct_start < 1:
            raise ValueError("weight_decay must be >= 0, label_smoothing in [0, 1), pct_start in (0, 1)")

    def augmentation(self) -> Augmentation:
        """The training augmentation this config asks for."""
        return Augmentation(self.flip, self.cutout, self.cutout_p, self.cutout_anywhere, self.padding)
