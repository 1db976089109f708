"""LR range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017): train with the recipe
while the learning rate grows exponentially, and watch where the loss falls fastest and where it blows up."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .data import CIFAR10Data
from .evaluation import train_mode
from .train import make_trainer


@dataclass
class LRFinderResult:
    """Learning rates tried (one per batch, growing exponentially) and the smoothed training loss at each."""

    lrs: list[float]
    losses: list[float]

    def suggestion(self) -> float:
        """The LR where the smoothed loss falls fastest (steepest slope in log-LR), up to the lowest loss: what
        follows a blow-up is not learning."""
        end = int(np.argmin(self.losses)) + 1
        if end < 3:
            raise ValueError("the loss never fell: lower start_lr or run more steps")
        slope = np.gradient(np.array(self.losses[:end]), np.log(self.lrs[:end]))
        return float(self.lrs[int(np.argmin(slope))])


def lr_find(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
            device: torch.device | str | None = None, start_lr: float = 1e-4, end_lr: float = 10.0,
            steps: int = 100, smoothing: float = 0.05, diverge: float = 4.0) -> LRFinderResult:
    """The recipe's steps while the LR grows from start_lr to end_lr over `steps`
    batches, stopping once the loss exceeds `diverge` times its best. The model's weights and mode are restored."""
    if not 0 < start_lr < end_lr or steps < 3:
        raise ValueError("need 0 < start_lr < end_lr and steps >= 3")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t = make_trainer(model, data, config, device, schedule=False)
    result, factor, average, best = LRFinderResult([], []), (end_lr / start_lr) ** (1 / (steps - 1)), 0.0, math.inf

    def batches():  # as many epochs as the steps take
        for epoch in itertools.count(1):
            t.train_batches.set_epoch(epoch)
            yield from t.train_batches

    with train_mode(model):
        try:
            for x, y in itertools.islice(batches(), steps):
                lr = start_lr * factor ** len(result.lrs)
                for group in t.optimizer.param_groups:
                    group["lr"] = lr
                average = smoothing * t.step(x, y)[0].item() + (1 - smoothing) * average
                smoothed = average / (1 - (1 - smoothing) ** (len(result.lrs) + 1))  # bias-corrected
                result.lrs.append(lr)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                if not math.isfinite(smoothed) or smoothed > diverge * best:
                    break
        finally:
            model.load_state_dict(saved)
    return result
