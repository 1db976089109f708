"""How much the offline JPEG copy of CIFAR-10 costs, measured with a published reference: airbench (Keller
Jordan, https://github.com/KellerJordan/cifar10-airbench, the `airbench` package on PyPI, unmodified) is
published at 94.01% (airbench94) and 96.05% (airbench96) mean test accuracy on the original data; trained on
the copy, the difference D = published - measured is the copy's penalty estimate.

    python benchmarks/calibration.py export --data-dir /tmp/cifar10-jpeg --out /tmp/calib   # any machine
    python benchmarks/calibration.py run --dir /tmp/calib --seeds94 10 --seeds96 3             # a CUDA GPU

`export` writes the copy as airbench loads it, DIR/cifar10/{train,test}.pt: a dict of uint8 NHWC `images`,
int64 `labels` and `classes`. `run` trains from there (airbench reads ./cifar10) and writes
benchmarks/calibration.json. airbench is a benchmark-only dependency: benchmarks/gpu_wheels.sh carries its wheel.
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

import torch  # noqa: E402

from PyTorch_Vision.data import CIFAR10Data, load_cifar10  # noqa: E402

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write the offline copy as airbench reads it")
    e.add_argument("--data-dir", required=True)
    e.add_argument("--out", required=True)
    r = sub.add_parser("run", help="train airbench on an exported copy (CUDA only)")
    r.add_argument("--dir", required=True, type=Path)
    r.add_argument("--seeds94", type=int, default=10)
    r.add_argument("--seeds96", type=int, default=3)
    args = p.parse_args()
    if args.command == "export":
        data = load_cifar10(args.data_dir, download=False)
        folder = export(data, args.out)
        print(f"wrote {folder}/train.pt ({len(data.train_labels)} images) and test.pt ({len(data.test_labels)})")
    else:
        if not torch.cuda.is_available():
            sys.exit("error: airbench trains on a CUDA GPU only")
        result = run(args.dir.resolve(), args.seeds94, args.seeds96)
        RESULT.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k.startswith("airbench")}, indent=1))


if __name__ == "__main__":
    main()
