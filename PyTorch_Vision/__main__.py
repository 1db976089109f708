"""Command line: `python -m PyTorch_Vision train --data-dir DIR --out runs/r1` runs the whole job (data, model
summary, training with checkpoints during and after each epoch, curves, misclassified and GradCAM galleries,
confusion matrix)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .checkpoint import CheckpointError, load_checkpoint
from .files import OutputError, atomic_write
from .config import TrainConfig
from .data import DataError, load_cifar10
from .history import History, results_markdown
from .lr_finder import lr_find
from .models import ResNet18, layer_table
from .plots import plot_lr_find
from .precision import choose_precision
from .report import make_report
from .options import RunOptions
from .run_folder import output_folder
from .settings import positive_float, positive_int, switch
from .train import fit
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


def add_settings(parser: argparse.ArgumentParser, settings: type = TrainConfig, only: tuple[str, ...] = (),
                 **defaults) -> None:
    """One option per field of the settings dataclass (TrainConfig, RunOptions; `only` some of them), with its help
    and parser: --batch-size for batch_size, --flip/--no-flip for a switch; `defaults` replace the fields' own."""
    for f in fields(settings):
        if only and f.name not in only:
            continue
        option, meta, default = "--" + f.name.replace("_", "-"), f.metadata, defaults.get(f.name, f.default)
        help = meta["help"].replace("%", "%%")  # argparse formats help with %
        if meta["parse"] is switch:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default,
                                help=help + (" (default: on)" if default else " (default: off)"))
        else:
            how = {"choices": meta["choices"]} if meta["choices"] else {"type": _checked(meta["parse"])}
            shown = "" if default is None else " (default: %(default)s)"
            parser.add_argument(option, default=default, help=help + shown, **how)


def settings_from_args(args: argparse.Namespace, settings: type):
    """The settings dataclass (TrainConfig, RunOptions) the parsed options say; fields without an option keep their
    default."""
    return settings(**{f.name: getattr(args, f.name) for f in fields(settings) if hasattr(args, f.name)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m PyTorch_Vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train ResNet18 on CIFAR-10 and draw every figure")
    f = sub.add_parser("lr-find", help="LR range test with the training recipe; writes lr_find.png/json")
    add_settings(t, RunOptions)
    add_settings(f, RunOptions, ("data_dir", "limit_train", "out", "device"), out="runs/lr_find")
    for p in (t, f):
        add_settings(p)
    f.add_argument("--steps", type=_checked(positive_int), default=100)
    f.add_argument("--start-lr", type=_checked(positive_float), default=1e-4)
    f.add_argument("--end-lr", type=_checked(positive_float), default=10.0)
    r = sub.add_parser("results", help="print a run's history.json as Markdown: headline figures, per-epoch table")
    r.add_argument("history", help="a history.json written by train or by the notebook")
    r.add_argument("--headline", action="store_true", help="the headline figures only, not the per-epoch table")
    return parser


def find_lr(args: argparse.Namespace) -> None:
    options = settings_from_args(args, RunOptions)
    out = output_folder(options.out, resume=False)
    config = settings_from_args(args, TrainConfig)
    device = resolve_device(options.device)
    data = load_cifar10(options.data_dir, limit_train=options.limit_train)
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


def train(args: argparse.Namespace) -> None:
    options = settings_from_args(args, RunOptions)
    out = output_folder(options.out, options.resume)  # refuses a file, or another run's folder, before loading data
    if options.resume:
        load_checkpoint(out / "checkpoint.pt")  # fail before loading data when there is nothing to resume
    config = settings_from_args(args, TrainConfig)
    device = resolve_device(options.device)
    choose_precision(device, config.precision)  # refuses bf16 on a GPU without it before loading data
    data = load_cifar10(options.data_dir, limit_train=options.limit_train, limit_test=options.limit_test)
    print(f"data: {data.source}: {len(data.train_labels)} train / {len(data.test_labels)} test images")
    print(f"device: {device_name(device)}")
    seed_everything(config.seed)
    model = ResNet18(num_classes=len(data.classes))
    print(layer_table(model))
    history = fit(model, data, config, device=device, out_dir=out, resume=options.resume, progress=options.progress,
                  checkpoint_seconds=60 * options.checkpoint_minutes)
    report = make_report(model, data, history, config, device, out)
    print(report.headline_markdown())
    print(f"wrote {out}/")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "lr-find":
            find_lr(args)
        elif args.command == "results":
            print(results_markdown(History.load(args.history), epochs=not args.headline))
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
