"""Command line: `python -m PyTorch_Vision train --data-dir DIR --out runs/r1` runs the whole job (data, model
summary, training with checkpoints during and after each epoch, curves, misclassified and GradCAM galleries,
confusion matrix)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import CheckpointError, OutputError, atomic_write, load_checkpoint
from .config import TrainConfig
from .data import DataError, load_cifar10
from .history import History, results_markdown
from .lr_finder import lr_find
from .models import ResNet18, summary
from .plots import plot_lr_find
from .precision import PRECISIONS, choose_precision
from .report import make_report
from .settings import count, positive_float, positive_int, share
from .train import fit
from .transforms import PADDINGS
from .utils import device_name, resolve_device, seed_everything

def _checked(parse):
    """An argparse type from a settings parser: its message becomes argparse's one-line usage error."""
    def check(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    check.__name__ = parse.__name__
    return check


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m PyTorch_Vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train ResNet18 on CIFAR-10 and draw every figure")
    t.add_argument("--data-dir", default="data", help="CIFAR-10 folder: ImageFolder copy (train/, test/), "
                   "cifar-10-batches-py, or where to download it (default: data)")
    t.add_argument("--epochs", type=_checked(positive_int), default=defaults.epochs)
    t.add_argument("--batch-size", type=_checked(positive_int), default=defaults.batch_size)
    t.add_argument("--max-lr", type=_checked(positive_float), default=defaults.max_lr)
    t.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    t.add_argument("--pct-start", type=_checked(share), default=defaults.pct_start,
                   help="share of the steps spent warming up to --max-lr")
    t.add_argument("--min-warmup-steps", type=_checked(positive_int), default=defaults.min_warmup_steps,
                   help="the LR climbs to --max-lr over no fewer batches; a shorter run peaks lower, in proportion")
    t.add_argument("--anneal", choices=("cos", "linear"), default=defaults.anneal,
                   help="shape of the warm-up and the annealing (OneCycle's anneal_strategy)")
    t.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    t.add_argument("--no-flip", action="store_true", help="plain RandomCrop + CutOut, no horizontal flip")
    t.add_argument("--no-cutout", action="store_true", help="no CutOut hole (an ablation, not the recipe)")
    t.add_argument("--cutout-p", type=_checked(share), default=defaults.cutout_p,
                   help="share of the images that get the hole (default 0.5: half of them; 1: every image)")
    t.add_argument("--cutout-anywhere", action="store_true",
                   help="hole centre anywhere in the image, clipped at the border (DeVries & Taylor's Cutout)")
    t.add_argument("--ema", type=_checked(share), default=defaults.ema,
                   help="evaluate an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.999; default 0: the weights themselves)")
    t.add_argument("--bn-stats-images", type=_checked(count), default=defaults.bn_stats_images,
                   help="recompute BatchNorm's statistics over this many training images before each evaluation "
                        "(0: keep its running averages)")
    t.add_argument("--padding", choices=PADDINGS, default=defaults.padding,
                   help="the crop's 4-px border: the mean colour (default) or the image reflected")
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--limit-train", type=_checked(positive_int), default=None,
                   help="use a fixed subset of N train images")
    t.add_argument("--limit-test", type=_checked(positive_int), default=None,
                   help="use a fixed subset of N test images")
    t.add_argument("--out", default="runs/resnet18", help="folder for history.json, checkpoint.pt and figures")
    t.add_argument("--resume", action="store_true", help="continue the run whose checkpoint.pt is in --out")
    t.add_argument("--checkpoint-minutes", type=_checked(positive_float), default=10.0,
                   help="also checkpoint within an epoch this often, so an interruption loses at most that much")
    t.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    t.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                   help="auto: bf16 on GPUs of compute capability >= 8.0, fp16 + GradScaler on 7.x (Colab's T4), "
                        "fp32 on older GPUs; on a CPU with native bf16 the faster of bf16 and fp32, timed "
                        "(fp32 on other CPUs)")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (off by default: it does not pay off in 20 epochs)")
    t.add_argument("--progress", choices=("bar", "epoch", "none"), default="bar")
    f = sub.add_parser("lr-find", help="LR range test with the training recipe; writes lr_find.png/json")
    f.add_argument("--data-dir", default="data")
    f.add_argument("--batch-size", type=_checked(positive_int), default=defaults.batch_size)
    f.add_argument("--steps", type=_checked(positive_int), default=100)
    f.add_argument("--start-lr", type=_checked(positive_float), default=1e-4)
    f.add_argument("--end-lr", type=_checked(positive_float), default=10.0)
    f.add_argument("--limit-train", type=_checked(positive_int), default=None)
    f.add_argument("--seed", type=int, default=defaults.seed)
    f.add_argument("--out", default="runs/lr_find")
    f.add_argument("--device", default=None)
    f.add_argument("--precision", choices=PRECISIONS, default=defaults.precision)
    r = sub.add_parser("results", help="print a run's history.json as Markdown: headline figures, per-epoch table")
    r.add_argument("history", help="a history.json written by train or by the notebook")
    return parser


def _output_folder(text: str) -> Path:
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder for the run's outputs")
    return out


def find_lr(args: argparse.Namespace) -> None:
    out = _output_folder(args.out)
    config = TrainConfig(batch_size=args.batch_size, seed=args.seed, precision=args.precision)
    device = resolve_device(args.device)
    data = load_cifar10(args.data_dir, limit_train=args.limit_train)
    seed_everything(config.seed)
    result = lr_find(ResNet18(num_classes=len(data.classes)), data, config, device, args.start_lr, args.end_lr,
                     args.steps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "lr_find.json", json.dumps({"lrs": result.lrs, "losses": result.losses,
                                                   "batch_size": args.batch_size, "device": device_name(device),
                                                   "suggestion": result.suggestion()}, indent=1).encode())
    plot_lr_find(result, config.max_lr, out / "lr_find.png")
    print(f"{len(result.lrs)} steps on {device_name(device)}; steepest descent at lr {result.suggestion():.3g} "
          f"(recipe max LR {config.max_lr}); wrote {out}/lr_find.png and lr_find.json")


def train(args: argparse.Namespace) -> None:
    out = _output_folder(args.out)
    if args.resume:
        load_checkpoint(out / "checkpoint.pt")  # fail before loading data when there is nothing to resume
    elif (out / "checkpoint.pt").exists():
        raise CheckpointError(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it or choose "
                              "another --out: nothing was overwritten")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_lr=args.max_lr,
                         weight_decay=args.weight_decay, pct_start=args.pct_start,
                         min_warmup_steps=args.min_warmup_steps, anneal=args.anneal,
                         label_smoothing=args.label_smoothing,
                         flip=not args.no_flip, cutout=not args.no_cutout, cutout_p=args.cutout_p,
                         cutout_anywhere=args.cutout_anywhere, padding=args.padding, ema=args.ema, seed=args.seed,
                         bn_stats_images=args.bn_stats_images,
                         compile=args.compile, precision=args.precision)
    device = resolve_device(args.device)
    choose_precision(device, config.precision)  # refuses bf16 on a GPU without it before loading data
    data = load_cifar10(args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test)
    print(f"data: {data.source}: {len(data.train_labels)} train / {len(data.test_labels)} test images")
    print(f"device: {device_name(device)}")
    seed_everything(config.seed)
    model = ResNet18(num_classes=len(data.classes))
    print(summary(model))
    history = fit(model, data, config, device=device, out_dir=out, resume=args.resume, progress=args.progress,
                  checkpoint_seconds=60 * args.checkpoint_minutes)
    report = make_report(model, data, history, config, device, out)
    print(report.summary_markdown())
    print(f"wrote {out}/")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "lr-find":
            find_lr(args)
        elif args.command == "results":
            print(results_markdown(History.load(args.history)))
    except (DataError, CheckpointError, FloatingPointError, ValueError, OutputError) as e:
        print(f"error: {e.strerror if isinstance(e, OutputError) else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted before training started; nothing was written",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
