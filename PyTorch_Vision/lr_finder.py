"""LR range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017): train with the recipe
while the learning rate grows exponentially, and watch where the loss falls fastest and where it blows up."""
from __future__ import annotations

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
        """The learning rate where the smoothed loss falls fastest (steepest negative slope in log-lr),
        looking only up to the lowest loss: what follows a blow-up is not learning."""
        end = int(np.argmin(self.losses)) + 1
        if end < 3:
            raise ValueError("the loss never fell: lower start_lr or run more steps")
        slope = np.gradient(np.array(self.losses[:end]), np.log(self.lrs[:end]))
        return float(self.lrs[int(np.argmin(slope))])


def lr_find(model: nn.Module, data: CIFAR10Data, config: TrainConfig = TrainConfig(),
            device: torch.device | str | None = None, start_lr: float = 1e-4, end_lr: float = 10.0,
            steps: int = 100, smoothing: float = 0.05, diverge: float = 4.0) -> LRFinderResult:
    """Train with the recipe's optimizer, precision and step while the learning rate grows from start_lr to end_lr
    over `steps` batches; stop when the loss exceeds `diverge` times its best. The model's weights and mode are
    restored afterwards."""
    if not 0 < start_lr < end_lr or steps < 3:
        raise ValueError("need 0 < start_lr < end_lr and steps >= 3")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t = make_trainer(model, data, config, device, schedule=False)
    result = LRFinderResult([], [])
    with train_mode(model):
        try:
            _grow_lr(t, result, start_lr, (end_lr / start_lr) ** (1 / (steps - 1)), steps, smoothing, diverge)
        finally:
            model.load_state_dict(saved)
    return result


def _grow_lr(t, result: LRFinderResult, start_lr: float, factor: float, steps: int, smoothing: float,
             diverge: float) -> None:
    """Step t.step over t.train_batches (as many epochs as it takes) with the LR growing by `factor` a batch,
    appending each LR and bias-corrected smoothed loss to `result`, until `steps` or divergence."""
    avg, best, epoch = 0.0, math.inf, 0
    while len(result.lrs) < steps:
        epoch += 1
        t.train_batches.set_epoch(epoch)
        for x, y in t.train_batches:
            lr = start_lr * factor ** len(result.lrs)
            for group in t.optimizer.param_groups:
                group["lr"] = lr
            try:
                loss, _, _ = t.step(x, y)
            except FloatingPointError:  # GradScaler's scale collapsed: the rate is far past the blow-up
                return
            avg = smoothing * loss.item() + (1 - smoothing) * avg
            smoothed = avg / (1 - (1 - smoothing) ** (len(result.lrs) + 1))
            result.lrs.append(lr)
            result.losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best or len(result.lrs) >= steps:
                return
