"""Command line: `python -m PyTorch_Vision train --data-dir DIR --out runs/r1` runs the whole job (data, model
summary, training with a checkpoint after each epoch, curves, misclassified and GradCAM galleries, confusion
matrix); under torchrun, one run across its processes (docs/USAGE.md, "Several GPUs")."""
from __future__ import annotations

import argparse
import os
import sys

import torch.distributed as dist

from .config import add_options, config_from_args
from .data import DataError, load_cifar10
from .history import PROGRESS, History, results_markdown
from .models import ResNet18, layer_table
from .report import make_report
from .train import CHECKPOINT, CheckpointError, check_split, fit, load_checkpoint, rank_and_world, run_folder, \
    setup_distributed
from .utils import OutputError, choose_precision, device_name, seed_everything


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0, else argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m PyTorch_Vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="train ResNet18 on CIFAR-10 and draw every figure")
    train_parser.add_argument("--data-dir", default="data", help="CIFAR-10 folder: ImageFolder copy (train/, test/), "
                              "cifar-10-batches-py, or where to download it (default: data)")
    train_parser.add_argument("--out", default="runs/resnet18", help="folder for the outputs (default: runs/resnet18)")
    train_parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    train_parser.add_argument("--limit-train", type=positive_int, help="use a fixed subset of N training images")
    train_parser.add_argument("--limit-test", type=positive_int, help="use a fixed subset of N test images")
    train_parser.add_argument("--resume", action="store_true", help="continue the run whose checkpoint.pt is in --out")
    train_parser.add_argument("--progress", choices=PROGRESS, default="bar",
                              help="a bar and a line per epoch, the line only, or nothing (default: bar)")
    add_options(train_parser)
    results = sub.add_parser("results", help="print a run's history.json as Markdown: headline, per-epoch table")
    results.add_argument("history", help="a history.json written by train or by the notebook")
    results.add_argument("--headline", action="store_true", help="the headline figures only, not the per-epoch table")
    return parser


def train(args: argparse.Namespace) -> None:
    out = run_folder(args.out, args.resume)  # refuses a file, or another run's folder, before loading data
    if args.resume:
        load_checkpoint(out / CHECKPOINT)  # fail before loading data when there is nothing to resume
    config = config_from_args(args)
    device = setup_distributed(args.device)
    rank, world = rank_and_world()
    check_split(config.batch_size, 0, world)
    choose_precision(device, config.precision)  # refuses bf16 on a GPU without it before loading data
    say = print if rank == 0 else lambda *args: None  # rank 0 alone prints and writes
    data = load_cifar10(args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test)
    say(f"data: {data.source}: {len(data.train_labels)} train / {len(data.test_labels)} test images")
    say(f"device: {device_name(device)}" + (f", one of {world} processes" if world > 1 else ""))
    seed_everything(config.seed)
    model = ResNet18(num_classes=len(data.classes))
    say(layer_table(model))
    history = fit(model, data, config, device=device, out_dir=out, resume=args.resume, progress=args.progress)
    if rank == 0:
        print(make_report(model, data, history, config, device, out).headline_markdown())
        print(f"wrote {out}/")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        else:
            print(results_markdown(History.load(args.history), epochs=not args.headline))
    except (DataError, CheckpointError, FloatingPointError, ValueError, OutputError) as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, every process meets the same error
            print(f"error: {e.strerror if isinstance(e, OutputError) else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted before training started; nothing was written",
              file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
