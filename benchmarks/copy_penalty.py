"""What an offline JPEG copy of CIFAR-10 costs: the same images as originals and as copies, in a 2x2 of training
on originals or on copies and testing on the original test images and on their copies, over several seeds.
--originals is an .npz of original images (train_images, train_labels, test_images, test_labels as uint8/int64
arrays, classes, and train_copy_files/test_copy_files naming each image's file in the copy, e.g.
"train/cat/0012.jpg"); --copy is the copy as a .tar.gz of its ImageFolder (cifar10-jpeg/train/<class>/...).

    python benchmarks/copy_penalty.py --originals ORIGINALS.npz --copy COPY.tar.gz [--seeds 3] [--work DIR]
    python benchmarks/copy_penalty.py --originals ORIGINALS.npz --checkpoint RUN/checkpoint.pt --data-dir COPY

The first trains ResNet18 on the training originals or their copies (20 epochs, batch 128, max LR 0.1, the
hole on every image), one run per
training source and seed, each resumable in --work (run the command again), and writes
benchmarks/copy_penalty.json. The second evaluates a full run's checkpoint (normalized with
the statistics of the copy it was trained on) on the 761 originals against their copies. Both skip with one
line where the file of originals is absent.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from PyTorch_Vision.config import TrainConfig  # noqa: E402
from PyTorch_Vision.data import CIFAR10Data, load_cifar10, make_batches, make_data  # noqa: E402
from PyTorch_Vision.evaluation import predict  # noqa: E402
from PyTorch_Vision.models import ResNet18  # noqa: E402
from PyTorch_Vision.train import fit, load_checkpoint  # noqa: E402
from PyTorch_Vision.utils import choose_precision, device_name, resolve_device, seed_everything  # noqa: E402

RESULT = Path(__file__).resolve().parent / "copy_penalty.json"
SOURCES = ("original", "copy")


@dataclass(frozen=True)
class Pairs:
    """The same images twice, (N,32,32,3) uint8: as originals and as they are in the JPEG copy."""

    train_original: np.ndarray
    train_copy: np.ndarray
    train_labels: np.ndarray
    test_original: np.ndarray
    test_copy: np.ndarray
    test_labels: np.ndarray
    classes: list[str]

    def train(self, source: str) -> np.ndarray:
        return self.train_original if source == "original" else self.train_copy

    def test(self, source: str) -> np.ndarray:
        return self.test_original if source == "original" else self.test_copy


def _read_copy(copy: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Decode the named files (relative to cifar10-jpeg/) from the extracted folder or from the .tar.gz."""
    from PIL import Image

    def decode(f) -> np.ndarray:
        with Image.open(f) as im:
            return np.asarray(im.convert("RGB"))

    if copy.is_dir():
        return {n: decode(copy / n) for n in names}
    wanted, found = set(names), {}
    with tarfile.open(copy) as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1] if member.name.startswith("cifar10-jpeg/") else member.name
            if name in wanted:
                found[name] = decode(io.BytesIO(tar.extractfile(member).read()))
    missing = wanted - set(found)
    if missing:
        raise SystemExit(f"{copy} lacks {len(missing)} of the files the originals name (e.g. {min(missing)}): "
                         "point --copy at the offline copy the originals were paired with")
    return found


def load_pairs(originals: Path, copy: Path) -> Pairs:
    """The originals of `originals` (.npz) and the same images decoded from the JPEG copy at `copy`."""
    z = np.load(originals)
    names = list(z["train_copy_files"]) + list(z["test_copy_files"])
    decoded = _read_copy(copy, names)
    classes = [str(c) for c in z["classes"]]
    for name, label in zip(names, list(z["train_labels"]) + list(z["test_labels"])):
        if name.split("/")[1] != classes[label]:
            raise SystemExit(f"{originals}: {name} is labelled {classes[label]}; the file does not pair with the copy")
    n_train = len(z["train_labels"])
    stack = lambda part: np.stack([decoded[n] for n in part])  # noqa: E731
    return Pairs(z["train_images"], stack(names[:n_train]), z["train_labels"], z["test_images"],
                 stack(names[n_train:]), z["test_labels"], classes)


def test_accuracies(model: torch.nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                    tests: dict[str, np.ndarray], test_labels: np.ndarray, classes: list[str], device: torch.device,
                    precision: str = "auto") -> dict[str, float]:
    """Test accuracy (%) of `model` on each image set of `tests`, all normalized with the statistics of
    `train_images` (what the model was trained with) and labelled `test_labels`."""
    result = {}
    for name, images in tests.items():
        data = make_data(train_images, train_labels, images, test_labels, classes, name)
        _, batches = make_batches(data, 256, device, TrainConfig(on_device_data=True))
        result[name] = predict(model, batches, choose_precision(device, precision)[0], keep_images=False).accuracy
    return result


def run_one(pairs: Pairs, source: str, seed: int, work: Path, device: torch.device, precision: str,
            epochs: int = 20) -> dict:
    """Train on `pairs.train(source)` with `seed` (resuming what `work` holds), then test on both test sets."""
    out = work / f"{source}_seed{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    config = TrainConfig(epochs=epochs, batch_size=128, max_lr=0.1, cutout_p=1.0, seed=seed, precision=precision,
                         on_device_data=True)  # the settings of the recorded runs
    data = make_data(pairs.train(source), pairs.train_labels, pairs.test(source), pairs.test_labels, pairs.classes,
                     f"cifar10-original-subset: {source} images")
    seed_everything(seed)
    model = ResNet18(len(pairs.classes))
    history = fit(model, data, config, device, out_dir=out, resume=(out / "checkpoint.pt").exists(),
                  progress="epoch")
    accuracy = test_accuracies(model, pairs.train(source), pairs.train_labels,
                               {s: pairs.test(s) for s in SOURCES}, pairs.test_labels, pairs.classes, device,
                               precision)
    result = {"trained_on": source, "seed": seed, "test_accuracy": accuracy,
              "train_seconds": round(sum(history.epoch_seconds), 1), "epochs": len(history),
              "device": device_name(device), "precision": history.run["precision"], "torch": torch.__version__,
              "config": asdict(config)}
    done.write_text(json.dumps(result, indent=1))
    return result


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def summary(runs: list[dict]) -> str:
    """Markdown: accuracy per run, per cell of the 2x2 (mean ± sample std over seeds), and the paired
    differences: copy test minus original test of the same model, and copy-trained minus original-trained
    models of the same seed on the same test set."""
    by = {(r["trained_on"], r["seed"]): r["test_accuracy"] for r in runs}
    seeds = sorted({s for _, s in by})
    lines = ["| trained on | seed | test: originals | test: copies | copies - originals |", "|---|---:|---:|---:|---:|"]
    for (src, seed), acc in sorted(by.items()):
        lines.append(f"| {src} | {seed} | {acc['original']:.2f} | {acc['copy']:.2f} | "
                     f"{acc['copy'] - acc['original']:+.2f} |")
    lines += ["", "| trained on | seeds | test: originals | test: copies | test-time cost (copies - originals, "
              "paired) |", "|---|---:|---:|---:|---:|"]
    for src in SOURCES:
        cell = [by[(src, s)] for s in seeds if (src, s) in by]
        if cell:
            lines.append(f"| {src} | {len(cell)} | {_mean_std([a['original'] for a in cell])} | "
                         f"{_mean_std([a['copy'] for a in cell])} | "
                         f"{_mean_std([a['copy'] - a['original'] for a in cell])} |")
    both = [s for s in seeds if ("original", s) in by and ("copy", s) in by]
    if both:
        lines += ["", f"Training on copies instead of originals, paired by seed ({len(both)} seeds): "
                  + "; ".join(f"on {t} test images {_mean_std([by[('copy', s)][t] - by[('original', s)][t] for s in both])}"
                              for t in ("original", "copy")) + " points."]
    return "\n".join(lines)


def checkpoint_penalty(checkpoint: Path, data: CIFAR10Data, pairs: Pairs, device: torch.device,
                       precision: str = "auto") -> dict:
    """A trained run's checkpoint (trained on `data`, the full copy) on the original test images against their
    copies: accuracy on each and the paired difference, per image agreement included."""
    ckpt = load_checkpoint(checkpoint)  # a missing or corrupt file ends in one line saying so
    model = ResNet18(len(data.classes))
    if ckpt.get("ema"):  # the average is what the run evaluated
        model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["ema"].items()
                               if k.startswith("module.")})
    else:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    accuracy = test_accuracies(model, data.train_images, data.train_labels, {s: pairs.test(s) for s in SOURCES},
                               pairs.test_labels, pairs.classes, device, precision)
    return {"checkpoint": str(checkpoint), "test_images": len(pairs.test_labels), "test_accuracy": accuracy,
            "copies_minus_originals": accuracy["copy"] - accuracy["original"], "device": device_name(device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--originals", type=Path, required=True, help="the .npz of original images (above)")
    p.add_argument("--copy", type=Path, default=None,
                   help="the offline copy: its .tar.gz or the extracted cifar10-jpeg folder (for training)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--work", type=Path, default=Path("runs/copy_penalty"),
                   help="checkpoints and per-run results (resumable)")
    p.add_argument("--result", type=Path, default=RESULT)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--checkpoint", type=Path, default=None, help="evaluate this full run's checkpoint instead")
    p.add_argument("--data-dir", type=Path, default=None, help="with --checkpoint: the copy it was trained on")
    args = p.parse_args()
    if not args.originals.exists():
        print(f"skipped: {args.originals} is absent (the original images this comparison needs)")
        return
    if args.checkpoint is not None and args.data_dir is None:
        p.error("--checkpoint needs --data-dir: the copy the run was trained on (for its normalization)")
    copy = args.copy or args.data_dir
    if copy is None:
        p.error("give --copy: the offline copy the originals are paired with (.tar.gz or extracted folder)")
    device = resolve_device(args.device)
    pairs = load_pairs(args.originals, copy)
    if args.checkpoint is not None:
        result = checkpoint_penalty(args.checkpoint, load_cifar10(args.data_dir, download=False), pairs, device,
                                    args.precision)
        print(json.dumps(result, indent=1))
        return
    runs = []
    for seed in range(args.seeds):
        for source in SOURCES:
            runs.append(run_one(pairs, source, seed, args.work, device, args.precision, args.epochs))
            args.result.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
            print(summary(runs), flush=True)


if __name__ == "__main__":
    main()
