"""Run by torchrun in tests/test_distributed.py: `fit` of PlainNet in every process, killed at a forward pass if
asked, resumed where OUT holds a checkpoint; rank 0 saves the weights and the history. ddp_fit.py OUT EPOCHS
CRASH_AT RESULT"""
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from conftest import CrashAfter, PlainNet
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.data import synthetic_cifar10
from PyTorch_Vision.train import fit, rank_and_world, setup_distributed

CONFIG = TrainConfig(batch_size=32, max_lr=0.05, min_warmup_steps=1, precision="fp32", bn_stats_images=0)


def run(out, epochs: int, crash_at: int = -1):
    """fit of PlainNet (seed 0) on a synthetic set, the same in one process as in each of torchrun's."""
    torch.manual_seed(0)
    model = CrashAfter(PlainNet(), crash_at)
    data = synthetic_cifar10(n_train=192, n_test=64, seed=0)
    history = fit(model, data, replace(CONFIG, epochs=epochs), device="cpu", out_dir=out,
                  resume=out is not None and (Path(out) / "checkpoint.pt").exists(), progress="none")
    return model.model, history


if __name__ == "__main__":
    out, epochs, crash_at, result = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    setup_distributed("cpu")
    model, history = run(out, epochs, crash_at)
    if rank_and_world()[0] == 0:
        torch.save({"model": model.state_dict(), "history": history.to_dict()}, result)
    dist.destroy_process_group()
