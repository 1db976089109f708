"""How much the offline JPEG copy of CIFAR-10 (CIFAR-10 re-encoded as JPEG, in ImageFolder layout) costs,
measured with a published reference: airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single
GPU", 2024; https://github.com/KellerJordan/cifar10-airbench) is published at 94.01% mean test accuracy with its
TTA on the original data (airbench96: 96.05%). Trained on the copy, D = published - measured estimates what the
copy costs a recipe at that level.

    python benchmarks/calibration.py cpu --data-dir DIR [--seeds 3] [--originals ORIGINALS.npz]     # any machine
    python benchmarks/calibration.py export --data-dir DIR --out /tmp/calib                         # any machine
    python benchmarks/calibration.py run --dir /tmp/calib --seeds94 10 --seeds96 3                  # a CUDA GPU

`cpu` trains our own port of airbench94 (benchmarks/airbench94.py; fp32 unless --precision bf16) one seed after
another, about 30 min each on a 2-core Zen 4, and records each seed as it finishes in calibration.json
(running the command again goes on from the seeds recorded). With --originals (the .npz of
benchmarks/copy_penalty.py), each model is also tested on those original test images against their copies.
`export` writes the copy as the `airbench` package loads it, DIR/cifar10/{train,test}.pt: a dict of uint8 NHWC
`images`, int64 `labels` and `classes`; `run` trains the package itself from there (CUDA only; `pip install
airbench==0.1.8`, a benchmark-only dependency) and writes benchmarks/calibration.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import airbench94  # noqa: E402
from PyTorch_Vision.data import CIFAR10Data, load_cifar10  # noqa: E402
from PyTorch_Vision.utils import device_name  # noqa: E402

PUBLISHED = {"airbench94": 94.01, "airbench96": 96.05}  # mean accuracies in the package's README (A100)
RESULT = Path(__file__).resolve().parent / "calibration.json"


def export(data: CIFAR10Data, out_dir: str | os.PathLike) -> Path:
    """Write `data` as airbench's CifarLoader reads it: OUT/cifar10/train.pt and test.pt. Returns OUT/cifar10."""
    folder = Path(out_dir) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        torch.save({"images": torch.from_numpy(images.copy()), "labels": torch.from_numpy(labels.copy()),
                    "classes": list(data.classes)}, folder / f"{split}.pt")
    return folder


def run(directory: Path, seeds94: int, seeds96: int) -> dict:
    """Train airbench94 and airbench96 on DIR/cifar10 for the given numbers of seeds; their TTA test accuracy
    (tta_level 2, as published) per seed, mean, sample std and D."""
    import airbench

    os.chdir(directory)  # airbench's loaders read ./cifar10
    test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "airbench": getattr(airbench, "__version__", "0.1.8"), "data": str(directory / "cifar10")}
    for name, seeds, train in (("airbench94", seeds94, airbench.train94), ("airbench96", seeds96, airbench.train96)):
        if seeds <= 0:
            continue
        accs, start = [], time.perf_counter()
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = train(verbose=False)
            accs.append(100 * airbench.evaluate(model, test_loader, tta_level=2))
            print(f"{name} seed {seed}: {accs[-1]:.2f}%", flush=True)
        mean = statistics.mean(accs)
        result[name] = {"published": PUBLISHED[name], "measured_mean": round(mean, 3),
                        "measured_std": round(statistics.stdev(accs), 3) if len(accs) > 1 else None,
                        "seeds": seeds, "D": round(PUBLISHED[name] - mean, 3), "accuracies": accs,
                        "seconds": round(time.perf_counter() - start, 1)}
    return result


def cpu_seed(data: CIFAR10Data, seed: int, precision: str, pairs=None) -> dict:
    """One seed of our airbench94 port on `data`: plain and TTA accuracy on its test set and training time; with
    `pairs` (copy_penalty.Pairs), TTA accuracy on those original test images and on their copies."""
    net, result = airbench94.run(data.train_images, data.train_labels, data.test_images, data.test_labels, seed,
                                 precision, log=lambda line: print(f"seed {seed} {line}", flush=True))
    record = {"seed": seed, "accuracy": round(result.accuracy, 3), "tta_accuracy": round(result.tta_accuracy, 3),
              "train_seconds": round(result.train_seconds, 1)}
    if pairs is not None:
        for source in ("original", "copy"):
            _, tta = airbench94.evaluate(net, torch.from_numpy(pairs.test(source)),
                                         torch.from_numpy(pairs.test_labels), precision)
            record[f"{source}_test_subset_tta"] = round(tta, 3)
    return record


def summarise(record: dict) -> dict:
    """Mean, sample spread and D of the seeds in `record`."""
    accs = [s["tta_accuracy"] for s in record["seeds"]]
    mean = statistics.mean(accs)
    return {**record, "measured_mean": round(mean, 3), "D": round(PUBLISHED["airbench94"] - mean, 3),
            "measured_std": round(statistics.stdev(accs), 3) if len(accs) > 1 else None}


def cpu(args: argparse.Namespace) -> None:
    result = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    key = f"airbench94_cpu_{args.precision}"
    record = result.get(key) or {"published": PUBLISHED["airbench94"], "precision": args.precision,
                                 "device": device_name("cpu"), "torch": torch.__version__,
                                 "threads": torch.get_num_threads(), "seeds": []}
    data = load_cifar10(args.data_dir, download=False)
    record["data"] = data.source
    pairs = None
    if args.originals is not None:
        from copy_penalty import load_pairs  # the original images and the same images from the copy

        pairs = load_pairs(args.originals, Path(args.data_dir))
        record["test_subset"] = f"{len(pairs.test_labels)} original test images against their copies"
    for seed in range(args.seeds):
        if any(s["seed"] == seed for s in record["seeds"]):
            continue
        record["seeds"].append(cpu_seed(data, seed, args.precision, pairs))
        result[key] = summarise(record)
        RESULT.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(record["seeds"][-1]), flush=True)
    print(json.dumps({k: v for k, v in result[key].items() if k != "seeds"}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cpu", help="train our airbench94 port on the copy, one seed after another")
    c.add_argument("--data-dir", required=True, help="the copy: an ImageFolder (train/, test/) of CIFAR-10")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    c.add_argument("--originals", type=Path, default=None,
                   help="the .npz of original images of benchmarks/copy_penalty.py, for the paired figure")
    e = sub.add_parser("export", help="write the offline copy as airbench reads it")
    e.add_argument("--data-dir", required=True)
    e.add_argument("--out", required=True)
    r = sub.add_parser("run", help="train airbench on an exported copy (CUDA only)")
    r.add_argument("--dir", required=True, type=Path)
    r.add_argument("--seeds94", type=int, default=10)
    r.add_argument("--seeds96", type=int, default=3)
    args = p.parse_args()
    if args.command == "cpu":
        cpu(args)
    elif args.command == "export":
        data = load_cifar10(args.data_dir, download=False)
        folder = export(data, args.out)
        print(f"wrote {folder}/train.pt ({len(data.train_labels)} images) and test.pt ({len(data.test_labels)})")
    else:
        if not torch.cuda.is_available():
            sys.exit("error: airbench trains on a CUDA GPU only")
        result = run(args.dir.resolve(), args.seeds94, args.seeds96)
        earlier = json.loads(RESULT.read_text()) if RESULT.exists() else {}
        RESULT.write_text(json.dumps({**earlier, **result}, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k.startswith("airbench")}, indent=1))


if __name__ == "__main__":
    main()
