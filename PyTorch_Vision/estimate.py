"""How long a run would take on this machine, from a few timed batches: what the notebook says before it
starts 20 epochs on a machine without a GPU, and the timing loop of benchmarks/benchmark.py."""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import TrainConfig
from .data import CIFAR10Data
from .evaluation import predict
from .train import make_trainer
from .utils import default_device


def images_per_second(fn, batches, steps: int, warmup: int = 1,
                      device: torch.device | str = "cpu") -> tuple[float, float]:
    """(images/s over `steps` calls of fn(x, y) on `batches`, seconds spent in the `warmup` calls before them).
    Warm-up calls take first-call costs (worker start-up, cuDNN autotuning, compilation) out of the rate."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    it = iter(batches)
    start = time.perf_counter()
    for x, y in itertools.islice(it, warmup):
        fn(x, y)
    sync()
    warm = time.perf_counter() - start
    start, n = time.perf_counter(), 0
    for x, y in itertools.islice(it, steps):
        fn(x, y)
        n += len(y)
    sync()
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
