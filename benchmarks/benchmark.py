"""Throughput of ResNet18 training on whatever device is here, in one run, side by side:

  plain      fp32, default memory format, albumentations DataLoader: what a plain loop does
  project    what `fit` does on this device (mixed precision where it pays, channels_last, data on the
             device on CUDA; torch.compile with --compile), data loading included
  data       the data pipeline alone: albumentations DataLoader, and the batched device augmentation
  ceiling    the project's model step alone on synthetic data already on the device

Prints images/s and seconds per 50,000-image epoch, and the project/plain ratio.
    python benchmarks/benchmark.py [--steps 20] [--batch-size 512] [--cores 2] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from PyTorch_Vision.config import TrainConfig  # noqa: E402
from PyTorch_Vision.data import load_cifar10, make_batches, make_data  # noqa: E402
from PyTorch_Vision.models import ResNet18  # noqa: E402
from PyTorch_Vision.report import images_per_second  # noqa: E402
from PyTorch_Vision.train import Trainer, make_optimizer  # noqa: E402
from PyTorch_Vision.utils import PRECISIONS, choose_precision, default_device, device_name, precision_text  # noqa: E402

EPOCH = 50_000


def train_step(model: nn.Module, device: torch.device, precision: str, channels_last: bool, compile_model: bool):
    """The package's training step (Trainer.step) with the given settings; compiled by torch.compile if asked."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, TrainConfig())
    return Trainer(torch.compile(model) if compile_model else model, optimizer, nn.CrossEntropyLoss(label_smoothing=0.1),
                   torch.amp.GradScaler(device.type, enabled=precision == "fp16"), precision=precision,
                   channels_last=channels_last).step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (compilation happens here)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--cores", type=int, default=None, help="restrict the process to N CPU cores (Colab has 2)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 copy to read; default: random images")
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true", help="compile the project's step with torch.compile")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="force one (fp16: the T4's path)")
    args = p.parse_args()

    if args.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
        torch.set_num_threads(args.cores)
    device = torch.device(args.device) if args.device else default_device()
    n = (args.steps + args.warmup + 1) * args.batch_size
    if args.data_dir:
        data = load_cifar10(args.data_dir, download=False)
    else:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g).numpy()
        labels = torch.randint(0, 10, (n,), generator=g).numpy()
        data = make_data(images, labels, images[:1000], labels[:1000], [str(i) for i in range(10)], "random")
    precision, _ = choose_precision(device, args.precision)
    on_device = device.type == "cuda"
    print(f"device: {device_name(device)}; torch {torch.__version__}; batch {args.batch_size}; "
          f"{args.steps} timed steps after {args.warmup} warm-up; data: {data.source}")
    print(f"project settings here: {precision_text(precision)}, channels_last, compile {args.compile}, "
          f"data on device {on_device}")

    results = {}

    def report(name: str, images_per_s: float, note: str = "") -> None:
        results[name] = images_per_s
        print(f"{name:<34} {images_per_s:9.1f} img/s  {EPOCH / images_per_s:8.1f} s/epoch  {note}")

    loader, _ = make_batches(data, args.batch_size, device, TrainConfig(on_device_data=False))
    device_batches, _ = make_batches(data, args.batch_size, device, TrainConfig(on_device_data=True))
    report("data: albumentations DataLoader", images_per_second(lambda x, y: None, loader, args.steps, 1, device)[0],
           f"({loader.loader.num_workers} workers)")
    report("data: batched augmentation",
           images_per_second(lambda x, y: None, device_batches, args.steps, 1, device)[0], f"(on {device.type})")

    torch.manual_seed(0)
    ceiling_step = train_step(ResNet18(), device, precision, True, args.compile)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    synthetic = itertools.repeat((x, y))
    r, warm = images_per_second(ceiling_step, synthetic, args.steps, args.warmup, device)
    report("ceiling: model step alone", r, f"(warm-up {warm:.1f} s)")
    if device.type == "cuda" or args.compile:  # what compilation would buy per step, against its warm-up
        torch.manual_seed(0)
        other = train_step(ResNet18(), device, precision, True, not args.compile)
        r, warm = images_per_second(other, synthetic, args.steps, args.warmup, device)
        report(f"ceiling, {'eager' if args.compile else 'compiled'}", r, f"(warm-up {warm:.1f} s)")

    torch.manual_seed(0)
    project_step = train_step(ResNet18(), device, precision, True, args.compile)
    r, warm = images_per_second(project_step, device_batches if on_device else loader, args.steps,
                                args.warmup, device)
    report("project: step + data pipeline", r, f"(warm-up {warm:.1f} s)")

    if not args.skip_plain:
        torch.manual_seed(0)
        plain_step = train_step(ResNet18(), device, "fp32", False, False)
        report("plain: fp32 loop + DataLoader",
               images_per_second(plain_step, loader, args.steps, args.warmup, device)[0])
        print(f"project / plain = {results['project: step + data pipeline'] / results['plain: fp32 loop + DataLoader']:.2f}x")
    print(f"project / ceiling = {results['project: step + data pipeline'] / results['ceiling: model step alone']:.2f}")


if __name__ == "__main__":
    main()
