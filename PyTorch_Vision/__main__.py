"""Command line: `python -m PyTorch_Vision train --data-dir DIR --out runs/r1` runs the whole job (data, model
summary, training with a checkpoint after each epoch, curves, misclassified and GradCAM galleries, confusion
matrix); under torchrun, one run across its processes (docs/USAGE.md, "Several GPUs")."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch.distributed as dist

from .config import add_options, config_from_args
from .data import DataError, load_cifar10
from .history import PROGRESS, History, results_markdown
from .lr_finder import lr_find
from .models import ResNet18, layer_table
from .plots import plot_lr_find
from .report import make_report
from .train import CHECKPOINT, CheckpointError, check_split, fit, load_checkpoint, rank_and_world, run_folder, \
    setup_distributed
from .utils import OutputError, atomic_write, choose_precision, device_name, resolve_device, seed_everything


def positive(kind: type):
    """An argparse type: a number of `kind` above 0, else argparse's one-line usage error."""
    def read(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (math.isfinite(value) and value > 0):
            noun = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"must be a positive {noun}, got {text!r}")
        return value
    return read


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m PyTorch_Vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="train ResNet18 on CIFAR-10 and draw every figure")
    find = sub.add_parser("lr-find", help="LR range test with the training recipe; writes lr_find.png/json")
    for p, out in ((train_parser, "runs/resnet18"), (find, "runs/lr_find")):
        p.add_argument("--data-dir", default="data", help="CIFAR-10 folder: ImageFolder copy (train/, test/), "
                       "cifar-10-batches-py, or where to download it (default: data)")
        p.add_argument("--out", default=out, help=f"folder for the outputs (default: {out})")
        p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
        p.add_argument("--limit-train", type=positive(int), help="use a fixed subset of N training images")
        add_options(p)
    train_parser.add_argument("--limit-test", type=positive(int), help="use a fixed subset of N test images")
    train_parser.add_argument("--resume", action="store_true", help="continue the run whose checkpoint.pt is in --out")
    train_parser.add_argument("--progress", choices=PROGRESS, default="bar",
                              help="a bar and a line per epoch, the line only, or nothing (default: bar)")
    find.add_argument("--steps", type=positive(int), default=100)
    find.add_argument("--start-lr", type=positive(float), default=1e-4)
    find.add_argument("--end-lr", type=positive(float), default=10.0)
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


def find_lr(args: argparse.Namespace) -> None:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("lr-find runs in one process: start it without torchrun")
    out = run_folder(args.out, resume=False)
    config = config_from_args(args)
    device = resolve_device(args.device)
    data = load_cifar10(args.data_dir, limit_train=args.limit_train)
    seed_everything(config.seed)
    result = lr_find(ResNet18(num_classes=len(data.classes)), data, config, device, args.start_lr, args.end_lr,
                     args.steps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "lr_find.json", json.dumps({"lrs": result.lrs, "losses": result.losses,
                                                   "batch_size": config.batch_size, "device": device_name(device),
                                                   "suggestion": result.suggestion()}, indent=1).encode())
    plot_lr_find(result, config.max_lr, out / "lr_find.png")
    print(f"{len(result.lrs)} steps on {device_name(device)}; steepest descent at lr {result.suggestion():.3g} "
          f"(recipe max LR {config.max_lr}); wrote {out}/lr_find.png and lr_find.json")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "lr-find":
            find_lr(args)
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
