"""The training path on the CPU against a plain PyTorch loop, side by side in one process:

  project   what `python -m PyTorch_Vision train --epochs 2 --limit-train 2048 --limit-test 256` runs (fit with
            the recipe: data as whole batches on the CPU, channels_last, bf16 where the CPU has AMX), timed over
            its second epoch, BatchNorm statistics and evaluation included
  plain     fp32, default memory format, the albumentations pipeline in a DataLoader with 2 workers, SGD over
            the same images, timed over its second epoch, training only

Prints training images per second of each and their ratio, with the CPU's flags.
    python benchmarks/cpu_speedup.py [--data-dir DATA] [--images 2048]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from PyTorch_Vision.config import TrainConfig  # noqa: E402
from PyTorch_Vision.data import AugmentedDataset, load_cifar10, synthetic_cifar10  # noqa: E402
from PyTorch_Vision.models import ResNet18  # noqa: E402
from PyTorch_Vision.train import fit  # noqa: E402
from PyTorch_Vision.transforms import train_transforms  # noqa: E402
from PyTorch_Vision.utils import choose_precision, device_name  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """Which of the flags that decide the CPU's speed in fp32 and bf16 /proc/cpuinfo lists."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in FLAGS if f in words]


def plain_epoch_rate(data, batch_size: int, workers: int) -> float:
    """Images/s of the second epoch of a plain fp32 loop (what a tutorial writes) over `data`'s training set."""
    torch.manual_seed(0)
    model = ResNet18(len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = DataLoader(AugmentedDataset(data.train_images, data.train_labels, train_transforms(data.mean, data.std)),
                        batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    model.train()
    for epoch in range(2):
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 copy; default: the synthetic stand-in")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    p.add_argument("--workers", type=int, default=2, help="the plain loop's DataLoader workers")
    p.add_argument("--skip-plain", action="store_true")
    args = p.parse_args()
    if args.data_dir:
        data = load_cifar10(args.data_dir, download=False, limit_train=args.images, limit_test=256)
    else:
        data = synthetic_cifar10(n_train=args.images, n_test=256)
    config = TrainConfig(epochs=2, batch_size=args.batch_size)
    print(f"{device_name('cpu')}; flags: {' '.join(cpu_flags()) or 'unknown'}; torch {torch.__version__}; "
          f"{data.source}, {len(data.train_labels)} train / {len(data.test_labels)} test images; batch "
          f"{args.batch_size}; project precision {choose_precision('cpu', config.precision)[0]}")
    torch.manual_seed(0)
    history = fit(ResNet18(len(data.classes)), data, config, device="cpu", progress="none")
    project = len(data.train_labels) / history.epoch_seconds[1]
    print(f"project (fit, 2nd epoch incl. evaluation): {project:7.1f} img/s  (1st epoch "
          f"{history.epoch_seconds[0]:.0f} s, 2nd {history.epoch_seconds[1]:.0f} s)", flush=True)
    if not args.skip_plain:
        plain = plain_epoch_rate(data, args.batch_size, args.workers)
        print(f"plain (fp32 eager, DataLoader x{args.workers}, 2nd epoch): {plain:7.1f} img/s")
        print(f"project / plain = {project / plain:.2f}x")


if __name__ == "__main__":
    main()
