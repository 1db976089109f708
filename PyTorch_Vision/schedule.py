"""The learning rate and momentum over a run: OneCycle stepped every batch, and the short-run rule that keeps a
short warm-up from climbing faster than the recipe's."""
from __future__ import annotations

import torch

from .config import TrainConfig


def warmup_and_peak(config: TrainConfig, total_steps: int) -> tuple[float, float]:
    """The schedule's warm-up length (in batches) and peak LR for a run of `total_steps` batches.

    The peak is max_lr, or max_lr * warm-up / min_warmup_steps when the warm-up is shorter than that: the LR
    never climbs faster than the recipe allows. A fresh network blows up when the LR jumps to 0.4 within a few
    batches (docs/RECIPE.md; benchmarks/RESULTS.md, "Short runs"); the 20-epoch recipe warms up over 1,955
    batches and is not affected."""
    pct_start = min(max(config.pct_start, 2 / total_steps), 1 - 1 / total_steps)  # both phases >= one step
    warmup = pct_start * total_steps
    return warmup, config.max_lr * min(1.0, warmup / config.min_warmup_steps)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """OneCycleLR over every batch of every epoch (stepped once per batch): the LR warms up to the peak of
    `warmup_and_peak`, then anneals, and the momentum moves the other way, from max_momentum to base_momentum at
    the LR's peak and back."""
    total = config.epochs * steps_per_epoch
    if total < 3:
        raise ValueError(f"a OneCycle schedule needs at least 3 training batches in all, this run has {total}: "
                         "use more epochs, more images or a smaller batch size")
    warmup, peak = warmup_and_peak(config, total)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=total, pct_start=warmup / total, div_factor=config.div_factor,
        final_div_factor=config.final_div_factor, anneal_strategy=config.anneal, base_momentum=config.base_momentum,
        max_momentum=config.max_momentum)
