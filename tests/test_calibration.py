"""The export that lets airbench (the published reference) train on the offline copy: the files must hold
exactly the images and labels, in the layout airbench's CifarLoader reads."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from calibration import export  # noqa: E402


def test_export_writes_what_airbench_loads(tiny_data, tmp_path):
    folder = export(tiny_data, tmp_path)
    assert folder == tmp_path / "cifar10"
    for split, images, labels in (("train", tiny_data.train_images, tiny_data.train_labels),
                                  ("test", tiny_data.test_images, tiny_data.test_labels)):
        data = torch.load(folder / f"{split}.pt", weights_only=True)  # as airbench's torch.load reads it
        assert set(data) == {"images", "labels", "classes"} and data["classes"] == tiny_data.classes
        assert data["images"].dtype == torch.uint8 and data["images"].shape == (len(labels), 32, 32, 3)
        assert torch.equal(data["images"], torch.from_numpy(images)), "pixels exactly as decoded"
        assert data["labels"].dtype == torch.int64 and torch.equal(data["labels"], torch.from_numpy(labels))
        # airbench: (images.half() / 255).permute(0, 3, 1, 2), i.e. NCHW in [0, 1]
        nchw = (data["images"].half() / 255).permute(0, 3, 1, 2)
        assert nchw.shape == (len(labels), 3, 32, 32) and 0 <= nchw.min() and nchw.max() <= 1
