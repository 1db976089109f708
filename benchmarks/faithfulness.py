"""GradCAM faithfulness of a trained run, per layer: deletion gap for the predicted class, the
random-heatmap control and the model-randomisation check, on N test images, with both erasing fills.

    python benchmarks/faithfulness.py --checkpoint RUN/checkpoint.pt --data-dir DATA --out OUT

Writes OUT/faithfulness.json and OUT/deletion_curves_{mean,blur}.png. The notebook's fill is fixed in advance
(the blur, after ROAD: it leaks less of the erased shape); the mean colour is measured beside it to show how far
the gaps depend on the way pixels are erased. Each fill costs about as long as the notebook's heatmap-check cell.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from PyTorch_Vision.data import load_cifar10  # noqa: E402
from PyTorch_Vision.faithfulness import FILLS, faithfulness_markdown, measure_layers  # noqa: E402
from PyTorch_Vision.models import ResNet18  # noqa: E402
from PyTorch_Vision.plots import plot_deletion_curves  # noqa: E402
from PyTorch_Vision.train import load_checkpoint  # noqa: E402
from PyTorch_Vision.transforms import batch_normalize  # noqa: E402
from PyTorch_Vision.utils import PRECISIONS, default_device, device_name  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", choices=[c for c in PRECISIONS if c != "auto"], default="fp32",
                   help="of the erasure's forward passes (bf16: about twice as fast where the CPU or GPU has it)")
    args = p.parse_args()
    device = default_device()
    data = load_cifar10(args.data_dir, download=False)
    model = ResNet18(num_classes=len(data.classes))
    model.load_state_dict(load_checkpoint(args.checkpoint)["model"])
    model.to(device).eval()
    pick = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))[:args.images]
    images = batch_normalize(torch.from_numpy(data.test_images[pick.numpy()]).permute(0, 3, 1, 2), data.mean,
                             data.std)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"device": device_name(device), "images": len(pick), "steps": args.steps, "precision": args.precision,
              "fills": {}}
    start = time.perf_counter()
    checks = {fill: measure_layers(model, images, steps=args.steps, fill=fill, precision=args.precision)
              for fill in FILLS}
    record["seconds"] = time.perf_counter() - start
    print(f"both fills in {record['seconds']:.0f} s", flush=True)
    for fill, results in checks.items():
        plot_deletion_curves(results, args.out / f"deletion_curves_{fill}.png")
        print(f"fill {fill}:\n{faithfulness_markdown(results)}\n", flush=True)
        random_curve = results[0].curves.random.mean(0)
        record["fills"][fill] = {
            "random_order_area": torch.trapezoid(random_curve, results[0].curves.fractions).item(),
            "layers": {r.layer: {"map": r.map_size, "deletion_gap": r.deletion_gap, "random_cam_gap": r.random_cam_gap,
                                 "randomised_correlation": r.randomised_correlation,
                                 "mean_cam_curve": r.curves.cam.mean(0).tolist()} for r in results},
            "mean_random_curve": random_curve.tolist()}
    (args.out / "faithfulness.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
